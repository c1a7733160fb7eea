//! Keeps every expression of a kernel shallow, so that no later step recurses deeply.
//!
//! naga's IR is flat (each expression names earlier ones by handle), but text is nested:
//! `a + b + c + ...` with 20,000 terms is an expression tree 20,000 deep. Turning such a tree
//! into text (naga's WGSL and GLSL writers, which wgpu uses for GL) or text into a tree (the
//! WGSL parser, in wgpu and in the fusion's check of its own output) recurses once per level,
//! and a long enough expression overflows any thread's stack, aborting the process.
//!
//! So the kernel is parsed once, on a thread with a large stack (`kernel/compile.rs`), and then
//! [`flatten`] names every [`MAX_INLINE`]-th level of a deep chain: a writer writes a named
//! expression as its own `let`, so nothing it writes nests deeper than that. Pipelines are
//! built from this IR (not from the source text), so wgpu never parses the deep text again.

use wgpu::naga::{self, Expression, Function, Handle};

/// The deepest chain written inline before an expression in it gets a name.
pub(crate) const MAX_INLINE: u32 = 32;

/// Names expressions of every function of `module` so no chain of unnamed expressions is
/// deeper than [`MAX_INLINE`] (see the module docs).
pub(crate) fn flatten(module: &mut naga::Module) {
    for (_, f) in module.functions.iter_mut() {
        flatten_function(f);
    }
    for ep in module.entry_points.iter_mut() {
        flatten_function(&mut ep.function);
    }
}

fn flatten_function(f: &mut Function) {
    let mut depth: Vec<u32> = Vec::with_capacity(f.expressions.len());
    let mut named = Vec::new();
    for (h, e) in f.expressions.iter() {
        // Operands come before the expression in the arena (naga's validator checks it).
        let deepest = std::cell::Cell::new(0);
        remap(&mut e.clone(), |o| {
            let d = depth.get(o.index()).copied().unwrap_or(0);
            deepest.set(deepest.get().max(d));
            o
        });
        let here = if f.named_expressions.contains_key(&h) {
            1
        } else if deepest.get() >= MAX_INLINE && is_value(e) {
            named.push(h);
            1
        } else {
            deepest.get() + 1
        };
        depth.push(here);
    }
    for h in named {
        f.named_expressions
            .insert(h, format!("wgpu_batch_e{}", h.index()));
    }
}

/// Whether `e` is a value that a `let` may hold (never a pointer) and that is emitted: the
/// kinds that make long chains.
fn is_value(e: &Expression) -> bool {
    matches!(
        e,
        Expression::Binary { .. }
            | Expression::Unary { .. }
            | Expression::Math { .. }
            | Expression::Select { .. }
            | Expression::As { .. }
            | Expression::Relational { .. }
            | Expression::Compose { .. }
            | Expression::Splat { .. }
            | Expression::Swizzle { .. }
            | Expression::Load { .. }
    )
}

/// Replaces every operand handle of `e` through `f`, for the kinds of expression a compute
/// kernel's values are made of (the fusion rewrite accepts no others in a chain).
pub(crate) fn remap(e: &mut Expression, f: impl Fn(Handle<Expression>) -> Handle<Expression>) {
    use Expression as E;
    match e {
        E::Compose { components, .. } => components.iter_mut().for_each(|c| *c = f(*c)),
        E::Access { base, index } => (*base, *index) = (f(*base), f(*index)),
        E::AccessIndex { base, .. } => *base = f(*base),
        E::Splat { value, .. } => *value = f(*value),
        E::Swizzle { vector, .. } => *vector = f(*vector),
        E::Load { pointer } => *pointer = f(*pointer),
        E::Unary { expr, .. } | E::As { expr, .. } => *expr = f(*expr),
        E::Binary { left, right, .. } => (*left, *right) = (f(*left), f(*right)),
        E::Select {
            condition,
            accept,
            reject,
        } => (*condition, *accept, *reject) = (f(*condition), f(*accept), f(*reject)),
        E::Relational { argument, .. } => *argument = f(*argument),
        E::Math {
            arg,
            arg1,
            arg2,
            arg3,
            ..
        } => {
            *arg = f(*arg);
            for a in [arg1, arg2, arg3] {
                *a = a.map(&f);
            }
        }
        E::ArrayLength(p) => *p = f(*p),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deepest_inline(f: &Function) -> u32 {
        let mut depth: Vec<u32> = Vec::new();
        for (h, e) in f.expressions.iter() {
            let deepest = std::cell::Cell::new(0);
            remap(&mut e.clone(), |o| {
                deepest.set(deepest.get().max(depth[o.index()]));
                o
            });
            let named = f.named_expressions.contains_key(&h);
            depth.push(if named { 1 } else { deepest.get() + 1 });
        }
        depth.into_iter().max().unwrap_or(0)
    }

    #[test]
    fn a_long_sum_is_written_in_shallow_lets_and_means_the_same() {
        let sum = vec!["x[i]"; 1000].join(" + ");
        let src = format!(
            "@group(0) @binding(0) var<storage, read_write> x: array<f32>;
             @compute @workgroup_size(1) fn main(@builtin(global_invocation_id) id: vec3<u32>) {{
                 let i = id.x; x[i] = {sum};
             }}"
        );
        let mut m = naga::front::wgsl::parse_str(&src).unwrap();
        flatten(&mut m);
        let f = &m.entry_points[0].function;
        assert!(deepest_inline(f) <= MAX_INLINE + 1, "{}", deepest_inline(f));
        let info = naga::valid::Validator::new(
            naga::valid::ValidationFlags::all(),
            naga::valid::Capabilities::all(),
        )
        .validate(&m)
        .unwrap();
        let text =
            naga::back::wgsl::write_string(&m, &info, naga::back::wgsl::WriterFlags::empty())
                .unwrap();
        // The written text parses within the parser's own recursion limit.
        naga::front::wgsl::parse_str(&text).unwrap();
    }
}
