//! The fused kernel's inner function takes the five builtins of a compute grid as plain
//! arguments (the job's own values, computed by the new entry point); the original entry
//! point's arguments, builtins or structs of builtins, are rebuilt from them.

use naga::{Function, FunctionArgument, Handle, Module, Span, Type, TypeInner};
use wgpu::naga;

/// The inner function's standard arguments and how the original ones are rebuilt from them.
#[derive(Clone)]
pub(super) struct Args {
    pub(super) arguments: Vec<FunctionArgument>,
    /// Per original argument: the builtins it is made of (one, or a struct's members).
    pub(super) originals: Vec<Vec<usize>>,
    /// Per original argument that is a struct: its type.
    pub(super) structs: Vec<Option<Handle<Type>>>,
}

/// The order of the inner function's arguments.
pub(super) const STANDARD: [naga::BuiltIn; 5] = [
    naga::BuiltIn::GlobalInvocationId,
    naga::BuiltIn::WorkGroupId,
    naga::BuiltIn::NumWorkGroups,
    naga::BuiltIn::LocalInvocationId,
    naga::BuiltIn::LocalInvocationIndex,
];

pub(super) fn standard_arguments(m: &mut Module, entry: &Function) -> Result<Args, String> {
    let vec3 = m.types.insert(
        Type {
            name: None,
            inner: TypeInner::Vector {
                size: naga::VectorSize::Tri,
                scalar: naga::Scalar::U32,
            },
        },
        Span::UNDEFINED,
    );
    let u32_ty = m.types.insert(
        Type {
            name: None,
            inner: TypeInner::Scalar(naga::Scalar::U32),
        },
        Span::UNDEFINED,
    );
    let arguments = STANDARD
        .iter()
        .enumerate()
        .map(|(i, _)| FunctionArgument {
            name: Some(
                [
                    "wgpu_batch_gid",
                    "wgpu_batch_wid",
                    "wgpu_batch_nwg",
                    "wgpu_batch_lid",
                    "wgpu_batch_lidx",
                ][i]
                    .into(),
            ),
            ty: if i == 4 { u32_ty } else { vec3 },
            binding: None,
        })
        .collect();
    let which = |b: &naga::Binding| match b {
        naga::Binding::BuiltIn(bi) => STANDARD
            .iter()
            .position(|s| s == bi)
            .ok_or_else(|| format!("the builtin {bi:?} cannot be fused")),
        _ => Err("an entry point argument is not a builtin".into()),
    };
    let (mut originals, mut structs) = (Vec::new(), Vec::new());
    for a in &entry.arguments {
        match (&a.binding, &m.types[a.ty].inner) {
            (Some(b), _) => {
                originals.push(vec![which(b)?]);
                structs.push(None);
            }
            (None, TypeInner::Struct { members, .. }) => {
                let parts = members
                    .iter()
                    .map(|mb| {
                        mb.binding
                            .as_ref()
                            .ok_or("a struct argument member is not a builtin".to_string())
                            .and_then(which)
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                originals.push(parts);
                structs.push(Some(a.ty));
            }
            _ => return Err("an entry point argument is not a builtin".into()),
        }
    }
    Ok(Args {
        arguments,
        originals,
        structs,
    })
}
