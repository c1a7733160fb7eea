//! Kernel fusion: a kernel rewritten (with naga, at [`Kernel::compile`](crate::Kernel)) so
//! that one dispatch runs many jobs of it, each on its own data, with the same results as one
//! dispatch each.
//!
//! # The fused kernel
//! - Every buffer binding holds the data of all the dispatch's jobs. A runtime-sized array
//!   (`array<T>`) holds each job's elements one after another ([`Shape::Slice`]); a binding of a
//!   fixed-size type `T` (a uniform, a struct, a fixed array) becomes an `array<T>` with one
//!   element per job ([`Shape::PerJob`]; a uniform becomes read-only storage).
//! - A **job table** (a new binding: a 64 KiB uniform buffer of `u32` words, as
//!   `array<vec4<u32>, 4096>`): `[workgroups in all, jobs]` and per slice binding the index
//!   of its zero element (see `kernel/fusion/rebuild.rs`); then per job its workgroups `[x, y, z]`
//!   and per slice binding its `[base, length]` in elements; then per workgroup of the fused
//!   grid two words, `job | z << 16` and `x | y << 16`: its job and its own workgroup id there.
//! - A new entry point flattens the dispatch's workgroup id, returns at once (the whole
//!   workgroup, uniformly) from padding workgroups, reads its job and the job's own workgroup
//!   id from the table, keeps the job index in a `var<private>` that every rewritten function
//!   reads, and calls the original entry point (now a plain function) with the job's own
//!   `workgroup_id`, `num_workgroups` and `global_invocation_id`. Every invocation of a
//!   workgroup reads the same words, so the job index is uniform and barriers stay valid.
//!   Why this shape (measured on llvmpipe, 64 SAXPY jobs of 4,096 elements in one dispatch):
//!   a uniform buffer read at a uniform offset is one scalar load per workgroup where a
//!   storage read is one per invocation (the table as storage made the fused kernel 1.7x
//!   slower); a per-invocation division to split a flat workgroup id cost a fifth more; one
//!   invocation reading for the workgroup behind a barrier cost more than every invocation
//!   reading.
//! - In every function, every access into a binding is kept inside the job's own data:
//!   `arrayLength(&x)` becomes the job's length, and each index of an access (into a slice,
//!   or into a fixed-size array, vector or matrix inside a binding) is clamped into its
//!   bounds. An out-of-bounds access therefore never reaches another job's data. An index
//!   past a slice's end reads and writes what it would unfused: the device's own rule, which
//!   [`Bounds`] names and `device/probe.rs` measures once per device (clamp to the last element, or
//!   read zero and drop the write). An index past the end of a fixed-size array inside an
//!   element follows the same rule fused; unfused, a device that checks only a binding's
//!   whole range (Vulkan with `robustBufferAccess2`) may let it reach the next element of the
//!   same binding. WGSL allows both; the tests compare such accesses for containment only.
//! - A use of a per-job binding becomes a use of the job's element.
//!
//! # What is not fused
//! Anything the rewrite cannot prove safe runs unfused, with the reason on the kernel
//! ([`Kernel::unfused_reason`](crate::Kernel::unfused_reason)): a struct binding with a
//! runtime-sized array after a header, a buffer binding used other than by indexing or
//! `arrayLength`, pointer arguments to storage or uniform memory, builtins other than the five
//! of a compute grid, operations the rewrite does not know, names with the rewrite's prefix
//! `wgpu_batch_`, and any rewrite naga does not validate. A job does not join a group (it runs
//! alone, as before) when one of its steps' kernels is not fused, or it has a resident
//! argument, an empty array argument, a scratch buffer bound as a fixed-size type, 32 KiB of
//! data or more, or more than 1,024 workgroups in a step (see `batch/group.rs`).

mod builtins;
mod rebuild;

use naga::{
    AddressSpace, ArraySize, Block, Expression, Function, GlobalVariable, Handle, Module,
    ResourceBinding, Span, Statement, StorageAccess, Type, TypeInner,
};
use wgpu::naga;

use crate::kernel::binding::{BindingInfo, BindingKind};
use builtins::{Args, STANDARD, standard_arguments};
use rebuild::rewrite;

/// The fused kernel's entry point.
pub(crate) const FUSED_ENTRY: &str = "wgpu_batch_fused";
const TABLE: &str = "wgpu_batch_jobs";
const JOB: &str = "wgpu_batch_job";
const INNER: &str = "wgpu_batch_inner";
/// u32 words of the table before its per-slice words (then come the job records).
pub(crate) const TABLE_HEADER: u32 = 2;
/// u32 words the job table holds: it is a uniform buffer of 64 KiB, the size every WebGPU
/// device allows (a device that allows less runs nothing fused).
pub(crate) const TABLE_WORDS: u32 = 16_384;
/// u32 words of a job record before its slices' (base, length) pairs.
pub(crate) const RECORD_HEADER: u32 = 3;

/// How the jobs of a fused dispatch share one binding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// A runtime-sized array: each job's elements, one job after another. `slot` is the
    /// binding's place among the slices (its base and length in the job's table record).
    Slice {
        /// Bytes per element.
        stride: u64,
        /// Which (base, length) pair of the job's record.
        slot: u32,
    },
    /// A fixed-size type: one element of `stride` bytes per job.
    PerJob {
        /// Bytes per element of the fused array (the type's size, rounded to its alignment).
        stride: u64,
    },
}

/// One of the kernel's bindings in the fused kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FusedBinding {
    /// The binding number (unchanged).
    pub binding: u32,
    /// How the jobs share it.
    pub shape: Shape,
    /// How the fused kernel declares it (a uniform becomes read-only storage).
    pub kind: BindingKind,
}

/// What a device does with an out-of-bounds access to a storage or uniform buffer unfused,
/// which the fused kernel reproduces inside each job's own data (see `device/probe.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Bounds {
    /// The index is clamped to the last element (naga's `Restrict`, Vulkan without
    /// `robustBufferAccess2`).
    Clamp = 0,
    /// A read returns zero and a write is dropped (naga's `ReadZeroSkipWrite`, and the
    /// hardware's own checks under Vulkan's `robustBufferAccess2`, DX12 and Metal).
    ZeroSkip = 1,
}

/// A kernel rewritten for fusion.
#[derive(Debug, Clone)]
pub(crate) struct Fused {
    /// WGSL of the fused kernel, entry point [`FUSED_ENTRY`], per [`Bounds`] (by its value).
    pub(crate) sources: [String; 2],
    /// The kernel's bindings, in binding order.
    pub(crate) bindings: Vec<FusedBinding>,
    /// The job table's binding number.
    pub(crate) table: u32,
    /// u32 words per job record.
    pub(crate) record: u32,
    /// u32 words of the table before the first record: `[workgroups, jobs]`, then per slice
    /// the index of its zero element (see `rebuild.rs`).
    pub(crate) header: u32,
}

impl Fused {
    /// The fused kernel's WGSL for a device that bounds accesses as `bounds`.
    pub(crate) fn source(&self, bounds: Bounds) -> &str {
        &self.sources[bounds as usize]
    }
}

/// What the rewrite of one function needs.
struct Ctx {
    /// Per global variable: how the rewrite treats it.
    globals: Vec<Treatment>,
    table: Handle<GlobalVariable>,
    job: Handle<GlobalVariable>,
    record: u32,
    header: u32,
    /// Slices in slot order.
    slices: Vec<Handle<GlobalVariable>>,
    /// Per slice slot: its element type.
    slice_ty: Vec<Handle<Type>>,
    /// Per-job globals.
    per_job: Vec<Handle<GlobalVariable>>,
    /// Per global variable that is a per-job binding: its type before the rewrite.
    per_job_ty: Vec<Option<Handle<Type>>>,
    /// The module's types.
    types: naga::UniqueArena<Type>,
    bounds: Bounds,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Treatment {
    Other,
    Slice(u32),
    PerJob,
}

/// Rewrites `module` (overrides resolved; `entry` its compute entry point, whose bindings
/// are `bindings`) for fusion, or says why it cannot be.
pub(crate) fn fuse(
    module: &Module,
    entry: usize,
    bindings: &[BindingInfo],
) -> Result<Fused, String> {
    reserved_names(module)?;
    let mut m = module.clone();
    let size = m
        .entry_points
        .get(entry)
        .ok_or("no such entry point")?
        .workgroup_size;
    let (mut ctx, fused) = shape_bindings(&mut m, bindings)?;
    check_functions(&m, &ctx)?;
    let inner = m.entry_points.remove(entry).function;
    m.entry_points.clear();
    let args = standard_arguments(&mut m, &inner)?;
    let mut sources = [String::new(), String::new()];
    for bounds in [Bounds::Clamp, Bounds::ZeroSkip] {
        ctx.bounds = bounds;
        sources[bounds as usize] = write(&m, &inner, &args, &ctx, size)?;
    }
    Ok(Fused {
        sources,
        bindings: fused,
        table: table_binding(bindings)?,
        record: ctx.record,
        header: ctx.header,
    })
}

/// The fused kernel's WGSL: `m` (without entry points) with its functions and the old entry
/// point `inner` rewritten under `ctx`, and the new entry point; parsed and validated again.
fn write(
    m: &Module,
    inner: &Function,
    args: &Args,
    ctx: &Ctx,
    size: [u32; 3],
) -> Result<String, String> {
    let mut m = m.clone();
    for (_, f) in m.functions.iter_mut() {
        *f = rewrite(f, ctx, None)?;
    }
    let mut inner = rewrite(inner, ctx, Some(args))?;
    inner.name = Some(INNER.into());
    inner.arguments = args.arguments.clone();
    m.functions.append(inner, Span::UNDEFINED);
    let names = tag_structs(&mut m);
    let info = validate(&m).map_err(|e| format!("the rewritten kernel does not validate: {e}"))?;
    let body = naga::back::wgsl::write_string(&m, &info, naga::back::wgsl::WriterFlags::empty())
        .map_err(|e| format!("could not write the rewritten kernel: {e}"))?;
    let source = format!("{body}\n{}", wrapper(size, ctx.header, ctx.record));
    let parsed = naga::front::wgsl::parse_str(&source).map_err(|e| {
        format!(
            "the fused kernel does not parse: {}",
            e.emit_to_string(&source)
        )
    })?;
    validate(&parsed).map_err(|e| format!("the fused kernel does not validate: {e}"))?;
    same_layouts(&m, &names, &parsed)?;
    Ok(source)
}

/// Renames every struct of `m` but naga's predeclared ones (written by no one, declared by
/// the parser) to `wgpu_batch_s{handle}_t`, a name naga's WGSL writer keeps as it is (it
/// changes names that end in a digit or clash with a keyword), so each struct of the parsed
/// rewrite is found by identity. Returns the original name of each renamed struct.
fn tag_structs(m: &mut Module) -> Vec<(Handle<Type>, Option<String>)> {
    let predeclared: Vec<Handle<Type>> = m
        .special_types
        .predeclared_types
        .values()
        .copied()
        .collect();
    let structs: Vec<Handle<Type>> = m
        .types
        .iter()
        .filter(|(h, t)| matches!(t.inner, TypeInner::Struct { .. }) && !predeclared.contains(h))
        .map(|(h, _)| h)
        .collect();
    structs
        .into_iter()
        .map(|h| {
            let mut t = m.types[h].clone();
            let original = t.name.replace(struct_tag(h));
            m.types.replace(h, t);
            (h, original)
        })
        .collect()
}

fn struct_tag(h: Handle<Type>) -> String {
    format!("wgpu_batch_s{}_t", h.index())
}

/// Refuses a rewrite whose WGSL lost a struct's layout: naga's WGSL writer does not write
/// `@size` and `@align`, so a struct laid out with them would read other bytes fused.
/// `names` are the structs `tag_structs` renamed, with their original names.
fn same_layouts(
    m: &Module,
    names: &[(Handle<Type>, Option<String>)],
    parsed: &Module,
) -> Result<(), String> {
    let layout = |t: &Type| match &t.inner {
        TypeInner::Struct { members, span } => {
            Some((members.iter().map(|m| m.offset).collect::<Vec<_>>(), *span))
        }
        _ => None,
    };
    for (h, name) in names {
        let want = layout(&m.types[*h]);
        let tag = struct_tag(*h);
        let same = parsed
            .types
            .iter()
            .any(|(_, p)| p.name.as_deref() == Some(tag.as_str()) && layout(p) == want);
        if !same {
            let name = name.as_deref().unwrap_or("?");
            return Err(format!(
                "struct `{name}` has a layout (@size or @align) the rewrite cannot keep"
            ));
        }
    }
    Ok(())
}

/// The job table's binding number: the one after the kernel's last.
fn table_binding(bindings: &[BindingInfo]) -> Result<u32, String> {
    let last = bindings.iter().map(|b| b.binding).max();
    last.map_or(Some(0), |b| b.checked_add(1)).ok_or_else(|| {
        format!(
            "binding {} leaves no binding number for the job table",
            u32::MAX
        )
    })
}

/// Refuses a module that names something `wgpu_batch_*`, the prefix of the rewrite's names.
fn reserved_names(m: &Module) -> Result<(), String> {
    let names = (m.global_variables.iter().map(|(_, g)| &g.name))
        .chain(m.functions.iter().map(|(_, f)| &f.name))
        .chain(m.constants.iter().map(|(_, c)| &c.name))
        .chain(m.types.iter().map(|(_, t)| &t.name))
        .flatten();
    for name in names {
        if name.starts_with("wgpu_batch_") {
            return Err(format!(
                "the kernel names `{name}`, and `wgpu_batch_` is the fusion's prefix"
            ));
        }
    }
    Ok(())
}

fn validate(m: &Module) -> Result<naga::valid::ModuleInfo, String> {
    naga::valid::Validator::new(
        naga::valid::ValidationFlags::all(),
        naga::valid::Capabilities::all(),
    )
    .validate(m)
    .map_err(|e| {
        // The whole chain of causes: the top one alone names only the function.
        let mut text = e.as_inner().to_string();
        let mut cause = std::error::Error::source(e.as_inner());
        while let Some(c) = cause {
            text.push_str(&format!(": {c}"));
            cause = c.source();
        }
        text
    })
}

/// Decides each binding's shape, turns fixed-size bindings into per-job arrays, and adds the
/// job table and the job index.
fn shape_bindings(
    m: &mut Module,
    bindings: &[BindingInfo],
) -> Result<(Ctx, Vec<FusedBinding>), String> {
    let mut layouter = naga::proc::Layouter::default();
    layouter.update(m.to_ctx()).map_err(|e| e.to_string())?;
    let mut globals = vec![Treatment::Other; m.global_variables.len()];
    let (mut slices, mut per_job, mut fused) = (Vec::new(), Vec::new(), Vec::new());
    let mut slice_ty = Vec::new();
    for info in bindings {
        let handle = find_binding(m, info.binding)?;
        let ty = m.global_variables[handle].ty;
        let shape = match binding_shape(m, &layouter, ty, info.binding)? {
            Kind::Slice { stride, base } => {
                globals[handle.index()] = Treatment::Slice(slices.len() as u32);
                slices.push(handle);
                slice_ty.push(base);
                let slot = slices.len() as u32 - 1;
                Shape::Slice { stride, slot }
            }
            Kind::PerJob { stride } => {
                globals[handle.index()] = Treatment::PerJob;
                per_job.push(handle);
                Shape::PerJob { stride }
            }
        };
        let kind = match info.kind {
            BindingKind::Uniform => BindingKind::StorageRead,
            k => k,
        };
        fused.push(FusedBinding {
            binding: info.binding,
            shape,
            kind,
        });
    }
    let per_job_ty = per_job_arrays(m, &layouter, &per_job);
    let (table, job) = table_and_job(m, bindings)?;
    globals.resize(m.global_variables.len(), Treatment::Other);
    let record = RECORD_HEADER + 2 * slices.len() as u32;
    let ctx = Ctx {
        globals,
        table,
        job,
        record,
        header: TABLE_HEADER + slices.len() as u32,
        slices,
        slice_ty,
        per_job,
        per_job_ty,
        types: m.types.clone(),
        bounds: Bounds::Clamp,
    };
    Ok((ctx, fused))
}

/// How the fused kernel holds one binding's data (before slots are numbered).
enum Kind {
    /// A runtime-sized array of `base` elements of `stride` bytes: each job's slice.
    Slice { stride: u64, base: Handle<Type> },
    /// A fixed-size value of `stride` bytes: one per job.
    PerJob { stride: u64 },
}

/// The global bound at `@group(0) @binding(binding)`.
fn find_binding(m: &Module, binding: u32) -> Result<Handle<GlobalVariable>, String> {
    let at = Some(ResourceBinding { group: 0, binding });
    m.global_variables
        .iter()
        .find(|(_, v)| v.binding == at)
        .map(|(h, _)| h)
        .ok_or_else(|| format!("binding {binding} not found"))
}

/// How a binding of type `ty` is shared by the jobs of a fused dispatch, or why it cannot be.
fn binding_shape(
    m: &Module,
    layouter: &naga::proc::Layouter,
    ty: Handle<Type>,
    binding: u32,
) -> Result<Kind, String> {
    let dynamic = |t: Handle<Type>| {
        matches!(
            m.types[t].inner,
            TypeInner::Array {
                size: ArraySize::Dynamic,
                ..
            }
        )
    };
    match &m.types[ty].inner {
        TypeInner::Array {
            size: ArraySize::Dynamic,
            stride,
            base,
        } => Ok(Kind::Slice {
            stride: u64::from(*stride),
            base: *base,
        }),
        TypeInner::Struct { members, .. } if members.last().is_some_and(|l| dynamic(l.ty)) => Err(
            format!("binding {binding} is a struct with a runtime-sized array after a header"),
        ),
        _ => Ok(Kind::PerJob {
            stride: u64::from(layouter[ty].to_stride()),
        }),
    }
}

/// Turns each per-job global into a runtime-sized array of its type (read-only storage for
/// a uniform); returns, per global, the type it had.
fn per_job_arrays(
    m: &mut Module,
    layouter: &naga::proc::Layouter,
    per_job: &[Handle<GlobalVariable>],
) -> Vec<Option<Handle<Type>>> {
    let mut per_job_ty = vec![None; m.global_variables.len()];
    for &g in per_job {
        let (ty, space) = (m.global_variables[g].ty, m.global_variables[g].space);
        per_job_ty[g.index()] = Some(ty);
        let inner = TypeInner::Array {
            base: ty,
            size: ArraySize::Dynamic,
            stride: layouter[ty].to_stride(),
        };
        let array = m.types.insert(Type { name: None, inner }, Span::UNDEFINED);
        let var = &mut m.global_variables[g];
        var.ty = array;
        if space == AddressSpace::Uniform {
            var.space = AddressSpace::Storage {
                access: StorageAccess::LOAD,
            };
        }
    }
    per_job_ty
}

/// Adds the job table (a uniform array of `vec4<u32>` at the binding after the kernel's
/// last) and the private job index.
fn table_and_job(
    m: &mut Module,
    bindings: &[BindingInfo],
) -> Result<(Handle<GlobalVariable>, Handle<GlobalVariable>), String> {
    let ty = |m: &mut Module, inner| m.types.insert(Type { name: None, inner }, Span::UNDEFINED);
    let u32_ty = ty(m, TypeInner::Scalar(naga::Scalar::U32));
    let vec4 = ty(
        m,
        TypeInner::Vector {
            size: naga::VectorSize::Quad,
            scalar: naga::Scalar::U32,
        },
    );
    let quads = std::num::NonZeroU32::new(TABLE_WORDS / 4).ok_or("no table")?;
    let words = ty(
        m,
        TypeInner::Array {
            base: vec4,
            size: ArraySize::Constant(quads),
            stride: 16,
        },
    );
    let global = |name: &str, space, binding, ty| GlobalVariable {
        name: Some(name.into()),
        space,
        binding,
        ty,
        init: None,
        memory_decorations: Default::default(),
    };
    let binding = Some(ResourceBinding {
        group: 0,
        binding: table_binding(bindings)?,
    });
    let table = global(TABLE, AddressSpace::Uniform, binding, words);
    let table = m.global_variables.append(table, Span::UNDEFINED);
    let job = global(JOB, AddressSpace::Private, None, u32_ty);
    let job = m.global_variables.append(job, Span::UNDEFINED);
    Ok((table, job))
}

/// Refuses what the rewrite cannot make safe (see the module docs).
fn check_functions(m: &Module, ctx: &Ctx) -> Result<(), String> {
    let all = m
        .functions
        .iter()
        .map(|(_, f)| f)
        .chain(m.entry_points.iter().map(|e| &e.function));
    for f in all {
        for a in &f.arguments {
            if let TypeInner::Pointer { space, .. } = m.types[a.ty].inner
                && matches!(space, AddressSpace::Storage { .. } | AddressSpace::Uniform)
            {
                return Err("a function takes a pointer to storage or uniform memory".into());
            }
        }
        check_expressions(f, ctx)?;
    }
    Ok(())
}

/// Every use of a slice binding is an index or `arrayLength`; no unsupported expression.
fn check_expressions(f: &Function, ctx: &Ctx) -> Result<(), String> {
    let slice = |h: Handle<Expression>| match f.expressions[h] {
        Expression::GlobalVariable(g) => matches!(ctx.globals[g.index()], Treatment::Slice(_)),
        _ => false,
    };
    for (h, e) in f.expressions.iter() {
        let allowed_base = match e {
            Expression::Access { base, .. } | Expression::AccessIndex { base, .. } => Some(*base),
            Expression::ArrayLength(p) => Some(*p),
            _ => None,
        };
        if operands(e)?
            .into_iter()
            .any(|o| slice(o) && Some(o) != allowed_base)
        {
            return Err("a buffer binding is used other than by indexing or arrayLength".into());
        }
        let _ = h;
    }
    statement_operands_ok(&f.body, &slice)
}

fn statement_operands_ok(
    block: &Block,
    slice: &dyn Fn(Handle<Expression>) -> bool,
) -> Result<(), String> {
    for s in block.iter() {
        let mut bad = false;
        let mut nested = Vec::new();
        match s {
            Statement::Store { pointer, value } => bad = slice(*pointer) || slice(*value),
            Statement::Atomic { pointer, .. } | Statement::WorkGroupUniformLoad { pointer, .. } => {
                bad = slice(*pointer)
            }
            Statement::Call { arguments, .. } => bad = arguments.iter().any(|a| slice(*a)),
            Statement::Block(b) => nested.push(b),
            Statement::If { accept, reject, .. } => nested.extend([accept, reject]),
            Statement::Loop {
                body, continuing, ..
            } => nested.extend([body, continuing]),
            Statement::Switch { cases, .. } => nested.extend(cases.iter().map(|c| &c.body)),
            Statement::Emit(_)
            | Statement::Break
            | Statement::Continue
            | Statement::Return { .. }
            | Statement::Kill
            | Statement::ControlBarrier(_)
            | Statement::MemoryBarrier(_) => {}
            _ => return Err("the kernel uses an operation fusion does not support".into()),
        }
        if bad {
            return Err("a buffer binding is used other than by indexing or arrayLength".into());
        }
        for b in nested {
            statement_operands_ok(b, slice)?;
        }
    }
    Ok(())
}

/// The operands of an expression; an error for kinds fusion does not support.
fn operands(e: &Expression) -> Result<Vec<Handle<Expression>>, String> {
    use Expression as E;
    Ok(match e {
        E::Literal(_)
        | E::Constant(_)
        | E::ZeroValue(_)
        | E::FunctionArgument(_)
        | E::GlobalVariable(_)
        | E::LocalVariable(_)
        | E::CallResult(_)
        | E::AtomicResult { .. }
        | E::WorkGroupUniformLoadResult { .. } => vec![],
        E::Compose { components, .. } => components.clone(),
        E::Access { base, index } => vec![*base, *index],
        E::AccessIndex { base, .. } => vec![*base],
        E::Splat { value, .. } => vec![*value],
        E::Swizzle { vector, .. } => vec![*vector],
        E::Load { pointer } => vec![*pointer],
        E::Unary { expr, .. } => vec![*expr],
        E::Binary { left, right, .. } => vec![*left, *right],
        E::Select {
            condition,
            accept,
            reject,
        } => vec![*condition, *accept, *reject],
        E::Relational { argument, .. } => vec![*argument],
        E::Math {
            arg,
            arg1,
            arg2,
            arg3,
            ..
        } => [Some(*arg), *arg1, *arg2, *arg3]
            .into_iter()
            .flatten()
            .collect(),
        E::As { expr, .. } => vec![*expr],
        E::ArrayLength(p) => vec![*p],
        _ => return Err("the kernel uses an expression fusion does not support".into()),
    })
}

/// The fused entry point (see the module docs), for workgroups of `size`, a table header of
/// `header` words and job records of `record` words.
fn wrapper(size: [u32; 3], header: u32, record: u32) -> String {
    let [x, y, z] = size;
    format!(
        "fn wgpu_batch_word(i: u32) -> u32 {{
    return {TABLE}[i >> 2u][i & 3u];
}}

@compute @workgroup_size({x}, {y}, {z})
fn {FUSED_ENTRY}(@builtin(workgroup_id) wgpu_batch_fw: vec3<u32>,
        @builtin(num_workgroups) wgpu_batch_fg: vec3<u32>,
        @builtin(local_invocation_id) wgpu_batch_lid: vec3<u32>,
        @builtin(local_invocation_index) wgpu_batch_lidx: u32) {{
    let wgpu_batch_f = wgpu_batch_fw.y * wgpu_batch_fg.x + wgpu_batch_fw.x;
    if wgpu_batch_f >= wgpu_batch_word(0u) {{
        return;
    }}
    let wgpu_batch_m = {header}u + wgpu_batch_word(1u) * {record}u + 2u * wgpu_batch_f;
    let wgpu_batch_m0 = wgpu_batch_word(wgpu_batch_m);
    let wgpu_batch_m1 = wgpu_batch_word(wgpu_batch_m + 1u);
    {JOB} = wgpu_batch_m0 & 0xffffu;
    let wgpu_batch_jw = vec3<u32>(wgpu_batch_m1 & 0xffffu, wgpu_batch_m1 >> 16u, wgpu_batch_m0 >> 16u);
    let wgpu_batch_r = {header}u + {JOB} * {record}u;
    let wgpu_batch_nw = vec3<u32>(wgpu_batch_word(wgpu_batch_r), wgpu_batch_word(wgpu_batch_r + 1u), wgpu_batch_word(wgpu_batch_r + 2u));
    let wgpu_batch_gid = wgpu_batch_jw * vec3<u32>({x}u, {y}u, {z}u) + wgpu_batch_lid;
    {INNER}(wgpu_batch_gid, wgpu_batch_jw, wgpu_batch_nw, wgpu_batch_lid, wgpu_batch_lidx);
}}
"
    )
}

#[cfg(test)]
mod tests {
    use crate::kernel::compile::Kernel;

    #[test]
    fn saxpy_fuses_with_a_table_after_its_bindings_and_one_source_per_bounds_rule() {
        let k = Kernel::compile(crate::kernels::saxpy()).unwrap();
        let f = k.inner().fused.as_ref().unwrap();
        assert_eq!(f.table, 3);
        assert_eq!((f.header, f.record), (4, 7)); // two slices: x and y
        assert!(f.sources.iter().all(|s| s.contains(super::FUSED_ENTRY)));
        assert_ne!(f.sources[0], f.sources[1]);
    }
}
