//! Rebuilding one function of a fused kernel: its expressions copied anew after a prologue
//! (the job's record and values), with every access to a binding rewritten to the job's own
//! data and bounded like the device bounds it unfused (see [`Bounds`]).
//!
//! An access into a binding is a *chain*: a root (a slice binding indexed by the job's
//! element, or a per-job binding's element) and steps (a struct member, or an index into a
//! fixed-size array, vector or matrix). Every index of a chain is clamped into its bounds, so
//! no access leaves the job's element. Under [`Bounds::ZeroSkip`] the chain also carries a
//! predicate (all its indices in bounds); when it is false a read goes to the binding's zero
//! element and a write to its trash element, the two elements after all the jobs' data.

use naga::{
    BinaryOperator, Block, Expression, Function, Handle, Literal, MathFunction, ScalarKind, Span,
    Statement, TypeInner,
};
use wgpu::naga;

use super::{Args, Bounds, Ctx, STANDARD, Treatment};
use crate::kernel::flatten::remap;

/// Where a chain starts.
#[derive(Clone, Copy)]
enum Root {
    /// A slice binding (`global`, the new expression) at the job's clamped element `index`.
    Slice {
        slot: u32,
        global: Handle<Expression>,
        index: Handle<Expression>,
    },
    /// A per-job binding (`global`, the new expression): the job's element.
    PerJob { global: Handle<Expression> },
}

/// One step of a chain after its root.
#[derive(Clone, Copy)]
enum Link {
    /// An index into an array, vector or matrix, already clamped (a new expression).
    Index(Handle<Expression>),
    /// A struct member, or a constant index.
    Member(u32),
}

/// A pointer into a binding (see the module docs).
#[derive(Clone)]
struct Chain {
    root: Root,
    steps: Vec<Link>,
    /// The type it points to.
    ty: TypeInner,
    /// Under `ZeroSkip`: whether every index so far is in bounds (a new `bool` expression);
    /// `None` when no index can be out of bounds.
    pred: Option<Handle<Expression>>,
}

/// Builds a function's expressions anew (see the module docs).
struct Rebuild<'a> {
    ctx: &'a Ctx,
    new: naga::Arena<Expression>,
    /// Per old expression: its new handle (a read pointer for a chain), and the new handles
    /// created for it (a range).
    map: Vec<(Handle<Expression>, usize, usize)>,
    /// Per old expression that is a chain: the chain, and its write pointer when it differs
    /// from its read pointer.
    chains: Vec<Option<(Chain, Option<Handle<Expression>>)>>,
    /// Per slice slot: (base, length - 1, length, zero element, trash element).
    slices: Vec<[Handle<Expression>; 5]>,
    /// The job index, and the per-job bindings' zero and trash elements.
    job: Option<Handle<Expression>>,
    /// Per per-job binding (as `Ctx::per_job`): its global and the pointer to the job's
    /// element, made in the prologue. A bare use of the binding (`atomicAdd(&count, 1u)`)
    /// takes this pointer: the global it replaces is in scope without an `Emit`, so a pointer
    /// made where the global was used would never be emitted.
    per_job_ptr: Vec<(Handle<Expression>, Handle<Expression>)>,
    per_job_spare: Option<[Handle<Expression>; 2]>,
    /// The rebuilt entry point arguments (the inner function only).
    args: Vec<Handle<Expression>>,
}

fn b(new: &mut naga::Arena<Expression>, e: Expression) -> Handle<Expression> {
    new.append(e, Span::UNDEFINED)
}

fn lit(new: &mut naga::Arena<Expression>, v: u32) -> Handle<Expression> {
    b(new, Expression::Literal(Literal::U32(v)))
}

fn bin(
    new: &mut naga::Arena<Expression>,
    op: BinaryOperator,
    left: Handle<Expression>,
    right: Handle<Expression>,
) -> Handle<Expression> {
    b(new, Expression::Binary { op, left, right })
}

/// Rewrites `f` (the entry point when `args` is given: its arguments rebuilt from those).
pub(super) fn rewrite(f: &Function, ctx: &Ctx, args: Option<&Args>) -> Result<Function, String> {
    let mut r = Rebuild {
        ctx,
        new: naga::Arena::new(),
        map: Vec::with_capacity(f.expressions.len()),
        chains: Vec::with_capacity(f.expressions.len()),
        slices: Vec::new(),
        job: None,
        per_job_ptr: Vec::new(),
        per_job_spare: None,
        args: Vec::new(),
    };
    let prologue = r.prologue(args);
    for (h, e) in f.expressions.iter() {
        let start = r.new.len();
        let new = r.copy(f, h, e, args.is_some())?;
        r.map.push((new, start, r.new.len()));
    }
    let mut body = Block::new();
    if let Some((lo, hi)) = prologue {
        r.emit(lo, hi, Span::UNDEFINED, &mut body);
    }
    body.extend_block(r.block(&f.body)?);
    let mut out = Function {
        name: f.name.clone(),
        arguments: f.arguments.clone(),
        result: f.result.clone(),
        local_variables: f.local_variables.clone(),
        expressions: r.new,
        named_expressions: Default::default(),
        body,
        diagnostic_filter_leaf: f.diagnostic_filter_leaf,
    };
    for (_, lv) in out.local_variables.iter_mut() {
        if let Some(init) = lv.init.as_mut() {
            *init = r.map[init.index()].0;
        }
    }
    for (h, name) in f.named_expressions.iter() {
        out.named_expressions
            .insert(r.map[h.index()].0, name.clone());
    }
    Ok(out)
}

impl Rebuild<'_> {
    /// Appends the prologue (the job's record and values, the rebuilt arguments); returns the
    /// range of new handles to emit first.
    fn prologue(&mut self, args: Option<&Args>) -> Option<(usize, usize)> {
        let ctx = self.ctx;
        let new = &mut self.new;
        let zero_skip = ctx.bounds == Bounds::ZeroSkip;
        let start = new.len();
        let table = b(new, Expression::GlobalVariable(ctx.table));
        // Word `at` of the table: `table[at >> 2][at & 3]`.
        let (two, three) = (lit(new, 2), lit(new, 3));
        let word = |new: &mut naga::Arena<Expression>, at: Handle<Expression>| {
            let quad = bin(new, BinaryOperator::ShiftRight, at, two);
            let lane = bin(new, BinaryOperator::And, at, three);
            let v = b(
                new,
                Expression::Access {
                    base: table,
                    index: quad,
                },
            );
            let p = b(
                new,
                Expression::Access {
                    base: v,
                    index: lane,
                },
            );
            b(new, Expression::Load { pointer: p })
        };
        if !ctx.slices.is_empty() || !ctx.per_job.is_empty() {
            let job_ptr = b(new, Expression::GlobalVariable(ctx.job));
            let job = b(new, Expression::Load { pointer: job_ptr });
            let (header, record, one) = (lit(new, ctx.header), lit(new, ctx.record), lit(new, 1));
            let scaled = bin(new, BinaryOperator::Multiply, job, record);
            let rec = bin(new, BinaryOperator::Add, header, scaled);
            for s in 0..ctx.slices.len() as u32 {
                let (ob, ol) = (
                    lit(new, super::RECORD_HEADER + 2 * s),
                    lit(new, super::RECORD_HEADER + 2 * s + 1),
                );
                let at = bin(new, BinaryOperator::Add, rec, ob);
                let base = word(new, at);
                let at = bin(new, BinaryOperator::Add, rec, ol);
                let len = word(new, at);
                let last = bin(new, BinaryOperator::Subtract, len, one);
                let (zero, trash) = if zero_skip {
                    let at = lit(new, super::TABLE_HEADER + s);
                    let zero = word(new, at);
                    (zero, bin(new, BinaryOperator::Add, zero, one))
                } else {
                    (last, last) // unused
                };
                self.slices.push([base, last, len, zero, trash]);
            }
            if zero_skip && !ctx.per_job.is_empty() {
                let at = lit(new, 1);
                let jobs = word(new, at);
                let trash = bin(new, BinaryOperator::Add, jobs, one);
                self.per_job_spare = Some([jobs, trash]);
            }
            self.job = Some(job);
        }
        if let Some(args) = args {
            self.rebuild_arguments(args);
        }
        if let Some(job) = self.job {
            self.per_job_pointers(job);
        }
        (self.new.len() > start).then_some((start, self.new.len()))
    }

    /// Rebuilds the entry point's original arguments from the standard ones (a struct
    /// argument composed of its members).
    fn rebuild_arguments(&mut self, args: &Args) {
        let new = &mut self.new;
        let std_args: Vec<Handle<Expression>> = (0..STANDARD.len() as u32)
            .map(|i| b(new, Expression::FunctionArgument(i)))
            .collect();
        for (parts, st) in args.originals.iter().zip(&args.structs) {
            self.args.push(match st {
                None => std_args[parts[0]],
                Some(ty) => {
                    let components = parts.iter().map(|&p| std_args[p]).collect();
                    b(
                        new,
                        Expression::Compose {
                            ty: *ty,
                            components,
                        },
                    )
                }
            });
        }
    }

    /// Makes each per-job binding's pointer to job `job`'s element (see `per_job_ptr`).
    fn per_job_pointers(&mut self, job: Handle<Expression>) {
        for &g in &self.ctx.per_job {
            let global = b(&mut self.new, Expression::GlobalVariable(g));
            let index = job;
            let ptr = b(
                &mut self.new,
                Expression::Access {
                    base: global,
                    index,
                },
            );
            self.per_job_ptr.push((global, ptr));
        }
    }

    /// Emits the new expressions `lo..hi`, but for those that are in scope without it
    /// (literals, globals, arguments: naga refuses to emit them).
    fn emit(&self, lo: usize, hi: usize, span: Span, out: &mut Block) {
        // By handle, not by skipping through the arena (that is quadratic over a function).
        let range = naga::Range::from_index_range(lo as u32..hi as u32, &self.new);
        let pre: Vec<bool> = range.map(|h| self.new[h].needs_pre_emit()).collect();
        let mut run = lo;
        for i in lo..=hi {
            let stop = i == hi || pre[i - lo];
            if stop {
                if i > run {
                    out.push(
                        Statement::Emit(naga::Range::from_index_range(
                            run as u32..i as u32,
                            &self.new,
                        )),
                        span,
                    );
                }
                run = i + 1;
            }
        }
    }

    fn m(&self, h: Handle<Expression>) -> Handle<Expression> {
        self.map[h.index()].0
    }

    /// The pointer a store or atomic writes through.
    fn write(&self, h: Handle<Expression>) -> Handle<Expression> {
        match &self.chains[h.index()] {
            Some((_, Some(w))) => *w,
            _ => self.m(h),
        }
    }

    /// The role of an old expression that is a binding's global.
    fn role(&self, f: &Function, h: Handle<Expression>) -> Treatment {
        match f.expressions[h] {
            Expression::GlobalVariable(g) => self.ctx.globals[g.index()],
            _ => Treatment::Other,
        }
    }

    /// Copies (or rewrites) one old expression; returns its new handle.
    fn copy(
        &mut self,
        f: &Function,
        h: Handle<Expression>,
        e: &Expression,
        entry: bool,
    ) -> Result<Handle<Expression>, String> {
        use Expression as E;
        let span = f.expressions.get_span(h);
        let chain = match e {
            E::Access { base, index } => self.extend(f, *base, Some(*index), 0)?,
            E::AccessIndex { base, index } => self.extend(f, *base, None, *index)?,
            E::GlobalVariable(g) if self.ctx.globals[g.index()] == Treatment::PerJob => {
                let at = self.ctx.per_job.iter().position(|p| p == g);
                let (global, ptr) = *at
                    .and_then(|i| self.per_job_ptr.get(i))
                    .ok_or("a per-job binding has no pointer")?;
                let ty = self.ctx.types
                    [self.ctx.per_job_ty[g.index()].ok_or("a per-job binding lost its type")?]
                .inner
                .clone();
                let chain = Chain {
                    root: Root::PerJob { global },
                    steps: vec![],
                    ty,
                    pred: None,
                };
                self.chains.push(Some((chain, None)));
                return Ok(ptr); // the job's element itself: no index can leave it
            }
            _ => None,
        };
        if let Some(c) = chain {
            let read = self.pointer(&c, 0);
            let write = c.pred.map(|_| self.pointer(&c, 1));
            self.chains.push(Some((c, write)));
            return Ok(read);
        }
        self.chains.push(None);
        Ok(match e {
            E::ArrayLength(p) if matches!(self.role(f, *p), Treatment::Slice(_)) => {
                let Treatment::Slice(slot) = self.role(f, *p) else {
                    unreachable!()
                };
                self.slices[slot as usize][2]
            }
            E::FunctionArgument(i) if entry => *self
                .args
                .get(*i as usize)
                .ok_or("an entry point argument is missing")?,
            other => {
                let mut c = other.clone();
                remap(&mut c, |o| self.m(o));
                self.new.append(c, span)
            }
        })
    }

    /// The chain an access makes: `base` indexed by the old expression `index`, or by the
    /// constant `k`; `None` when `base` is no binding nor chain.
    fn extend(
        &mut self,
        f: &Function,
        base: Handle<Expression>,
        index: Option<Handle<Expression>>,
        k: u32,
    ) -> Result<Option<Chain>, String> {
        let zero_skip = self.ctx.bounds == Bounds::ZeroSkip;
        // The index as u32, clamped below `bound` (unless `selected`: under ZeroSkip a slice's
        // index out of bounds is replaced by the zero or trash element's anyway), and whether
        // it was in bounds.
        let bounded = |this: &mut Self,
                       bound: Handle<Expression>,
                       last: Handle<Expression>,
                       selected: bool| {
            let u = match index {
                Some(i) => {
                    let expr = this.m(i);
                    b(
                        &mut this.new,
                        Expression::As {
                            expr,
                            kind: ScalarKind::Uint,
                            convert: Some(4),
                        },
                    )
                }
                None => lit(&mut this.new, k),
            };
            if selected && zero_skip {
                return (u, Some(bin(&mut this.new, BinaryOperator::Less, u, bound)));
            }
            let clamped = b(
                &mut this.new,
                Expression::Math {
                    fun: MathFunction::Min,
                    arg: u,
                    arg1: Some(last),
                    arg2: None,
                    arg3: None,
                },
            );
            let ok = zero_skip.then(|| bin(&mut this.new, BinaryOperator::Less, u, bound));
            (clamped, ok)
        };
        if let Treatment::Slice(slot) = self.role(f, base) {
            let [first, last, len, ..] = self.slices[slot as usize];
            let (clamped, pred) = bounded(self, len, last, true);
            let index = bin(&mut self.new, BinaryOperator::Add, first, clamped);
            let ty = self.ctx.types[self.ctx.slice_ty[slot as usize]]
                .inner
                .clone();
            return Ok(Some(Chain {
                root: Root::Slice {
                    slot,
                    global: self.m(base),
                    index,
                },
                steps: vec![],
                ty,
                pred,
            }));
        }
        let Some((c, _)) = self.chains[base.index()].clone() else {
            return Ok(None);
        };
        let (next, n) = inside(&c.ty, index.is_none(), k, &self.ctx.types)?;
        let mut c = Chain { ty: next, ..c };
        match (index, n) {
            (None, _) => c.steps.push(Link::Member(k)),
            (Some(_), Some(n)) => {
                let (bound, last) = (lit(&mut self.new, n), lit(&mut self.new, n - 1));
                let (clamped, ok) = bounded(self, bound, last, false);
                c.steps.push(Link::Index(clamped));
                c.pred = match (c.pred, ok) {
                    (Some(p), Some(o)) => {
                        Some(bin(&mut self.new, BinaryOperator::LogicalAnd, p, o))
                    }
                    (p, o) => p.or(o),
                };
            }
            (Some(_), None) => return Err("a dynamic index into a struct".into()),
        }
        Ok(Some(c))
    }

    /// Builds a chain's pointer; with a predicate, one that leads to the binding's zero
    /// (`spare` 0) or trash (`spare` 1) element when it is false.
    fn pointer(&mut self, c: &Chain, spare: usize) -> Handle<Expression> {
        let select = |this: &mut Self,
                      index: Handle<Expression>,
                      spare_index: Handle<Expression>| match c.pred {
            Some(condition) => b(
                &mut this.new,
                Expression::Select {
                    condition,
                    accept: index,
                    reject: spare_index,
                },
            ),
            None => index,
        };
        let mut p = match c.root {
            Root::Slice {
                slot,
                global,
                index,
            } => {
                let spare_index = self.slices[slot as usize][3 + spare];
                let index = select(self, index, spare_index);
                b(
                    &mut self.new,
                    Expression::Access {
                        base: global,
                        index,
                    },
                )
            }
            Root::PerJob { global } => {
                let job = self.job.unwrap_or(global);
                let index = match self.per_job_spare {
                    Some(s) => select(self, job, s[spare]),
                    None => job,
                };
                b(
                    &mut self.new,
                    Expression::Access {
                        base: global,
                        index,
                    },
                )
            }
        };
        for s in &c.steps {
            p = match *s {
                Link::Index(index) => b(&mut self.new, Expression::Access { base: p, index }),
                Link::Member(index) => b(&mut self.new, Expression::AccessIndex { base: p, index }),
            };
        }
        p
    }

    /// The new handles an old emitted range became (its members and what was inserted for them).
    fn range(&self, r: &naga::Range<Expression>) -> Option<(usize, usize)> {
        let (first, last) = r.first_and_last()?;
        let (lo, hi) = (self.map[first.index()].1, self.map[last.index()].2);
        (hi > lo).then_some((lo, hi))
    }

    fn cases(&self, cases: &[naga::SwitchCase]) -> Result<Vec<naga::SwitchCase>, String> {
        cases
            .iter()
            .map(|c| {
                Ok(naga::SwitchCase {
                    value: c.value,
                    body: self.block(&c.body)?,
                    fall_through: c.fall_through,
                })
            })
            .collect()
    }

    /// An atomic statement, its pointer the job's own (`Statement::Atomic` only).
    fn atomic(&self, s: &Statement) -> Statement {
        let Statement::Atomic {
            pointer,
            fun,
            value,
            result,
        } = s
        else {
            return s.clone();
        };
        let m = |h: Handle<Expression>| self.m(h);
        Statement::Atomic {
            pointer: self.write(*pointer),
            fun: match fun {
                naga::AtomicFunction::Exchange { compare } => naga::AtomicFunction::Exchange {
                    compare: compare.map(m),
                },
                other => *other,
            },
            value: m(*value),
            result: result.map(m),
        }
    }

    fn block(&self, old: &Block) -> Result<Block, String> {
        let mut out = Block::with_capacity(old.len());
        for (s, span) in old.span_iter() {
            let m = |h: Handle<Expression>| self.m(h);
            let s = match s {
                Statement::Emit(r) => {
                    if let Some((lo, hi)) = self.range(r) {
                        self.emit(lo, hi, *span, &mut out);
                    }
                    continue;
                }
                Statement::Block(b) => Statement::Block(self.block(b)?),
                Statement::If {
                    condition,
                    accept,
                    reject,
                } => Statement::If {
                    condition: m(*condition),
                    accept: self.block(accept)?,
                    reject: self.block(reject)?,
                },
                Statement::Switch { selector, cases } => Statement::Switch {
                    selector: m(*selector),
                    cases: self.cases(cases)?,
                },
                Statement::Loop {
                    body,
                    continuing,
                    break_if,
                } => Statement::Loop {
                    body: self.block(body)?,
                    continuing: self.block(continuing)?,
                    break_if: break_if.map(m),
                },
                Statement::Return { value } => Statement::Return {
                    value: value.map(m),
                },
                Statement::Store { pointer, value } => Statement::Store {
                    pointer: self.write(*pointer),
                    value: m(*value),
                },
                Statement::Atomic { .. } => self.atomic(s),
                Statement::WorkGroupUniformLoad { pointer, result } => {
                    Statement::WorkGroupUniformLoad {
                        pointer: m(*pointer),
                        result: m(*result),
                    }
                }
                Statement::Call {
                    function,
                    arguments,
                    result,
                } => Statement::Call {
                    function: *function,
                    arguments: arguments.iter().map(|a| m(*a)).collect(),
                    result: result.map(m),
                },
                Statement::Break => Statement::Break,
                Statement::Continue => Statement::Continue,
                Statement::Kill => Statement::Kill,
                Statement::ControlBarrier(b) => Statement::ControlBarrier(*b),
                Statement::MemoryBarrier(b) => Statement::MemoryBarrier(*b),
                _ => return Err("the kernel uses a statement fusion does not support".into()),
            };
            out.push(s, *span);
        }
        Ok(out)
    }
}

/// What an access `k` (a member when `member`, else an index) into a value of type `ty`
/// reaches: the element's type, and how many elements an index can choose from.
fn inside(
    ty: &TypeInner,
    member: bool,
    k: u32,
    types: &naga::UniqueArena<naga::Type>,
) -> Result<(TypeInner, Option<u32>), String> {
    Ok(match ty {
        TypeInner::Struct { members, .. } if member => {
            let m = members
                .get(k as usize)
                .ok_or("a struct member is missing")?;
            (types[m.ty].inner.clone(), None)
        }
        TypeInner::Array {
            base,
            size: naga::ArraySize::Constant(n),
            ..
        } => (types[*base].inner.clone(), Some(n.get())),
        TypeInner::Vector { size, scalar } => (TypeInner::Scalar(*scalar), Some(*size as u32)),
        TypeInner::Matrix {
            columns,
            rows,
            scalar,
        } => (
            TypeInner::Vector {
                size: *rows,
                scalar: *scalar,
            },
            Some(*columns as u32),
        ),
        _ => return Err("an access into a binding the rewrite cannot bound".into()),
    })
}
