//! A kernel's buffer bindings: how each is declared, what sizes it accepts, and their
//! reflection from a validated naga module.

use wgpu::naga;

/// How a binding is declared in WGSL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindingKind {
    /// `var<uniform>`.
    Uniform,
    /// `var<storage, read>`.
    StorageRead,
    /// `var<storage, read_write>`.
    StorageReadWrite,
}

/// One reflected `@group(0) @binding(n)` buffer of a kernel's entry point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindingInfo {
    /// The binding number.
    pub binding: u32,
    /// The WGSL variable's name (`x` for `var<storage, read> x: array<f32>`); empty for a
    /// binding the engine declares itself (a fused kernel's).
    pub name: String,
    /// The WGSL type of one element: of the array for an array or a struct ending in a
    /// runtime-sized array (`f32`, `vec4<f32>`, a struct's name), else of the whole type.
    pub element: String,
    /// Uniform, read-only storage or read-write storage.
    pub kind: BindingKind,
    /// Bytes before the runtime-sized array, or the whole size of a fixed-size type.
    pub fixed_size: u64,
    /// Element stride of a trailing runtime-sized array, if the type ends in one.
    pub stride: Option<u64>,
    /// The smallest buffer the binding accepts: the type's size, or with a runtime-sized array
    /// its size with one element (WGSL's minimum binding size, rounded to the type's alignment).
    pub min_size: u64,
}

impl BindingInfo {
    /// Checks that a buffer of `bytes` bytes fits this binding's type, or says why not.
    pub fn check_size(&self, bytes: u64) -> std::result::Result<(), String> {
        if bytes == 0 {
            return Err("buffer is empty; bindings need at least one element".into());
        }
        if !bytes.is_multiple_of(4) {
            return Err(format!("size {bytes} bytes is not a multiple of 4"));
        }
        match self.stride {
            Some(_) if bytes < self.min_size => Err(format!(
                "size {bytes} bytes is smaller than the {} bytes the type needs with one element",
                self.min_size
            )),
            Some(stride) if !(bytes - self.fixed_size).is_multiple_of(stride) => Err(format!(
                "size {bytes} bytes is not a whole number of {stride}-byte elements"
            )),
            None if bytes < self.fixed_size => Err(format!(
                "size {bytes} bytes is smaller than the type's {} bytes",
                self.fixed_size
            )),
            _ => Ok(()),
        }
    }
}

/// Every buffer global the entry point uses, with its kind and size rule.
pub(crate) fn reflect_bindings(
    module: &naga::Module,
    uses: &naga::valid::FunctionInfo,
) -> std::result::Result<Vec<BindingInfo>, String> {
    let mut layouter = naga::proc::Layouter::default();
    layouter
        .update(module.to_ctx())
        .map_err(|e| format!("laying out types: {e}"))?;
    let mut out = Vec::new();
    for (handle, var) in module.global_variables.iter() {
        let Some(rb) = &var.binding else { continue };
        if uses[handle].is_empty() {
            continue;
        }
        let kind = match var.space {
            naga::AddressSpace::Uniform => BindingKind::Uniform,
            naga::AddressSpace::Storage { access }
                if access.contains(naga::StorageAccess::STORE) =>
            {
                BindingKind::StorageReadWrite
            }
            naga::AddressSpace::Storage { .. } => BindingKind::StorageRead,
            _ => {
                return Err(format!(
                    "binding {}: only buffer bindings are supported",
                    rb.binding
                ));
            }
        };
        if rb.group != 0 {
            return Err(format!(
                "binding {} is in @group({}); only @group(0) is supported",
                rb.binding, rb.group
            ));
        }
        let (fixed_size, stride, min_size) = size_rule(module, &layouter, var.ty);
        out.push(BindingInfo {
            binding: rb.binding,
            name: var.name.clone().unwrap_or_default(),
            element: element_of(module, var.ty),
            kind,
            fixed_size,
            stride,
            min_size,
        });
    }
    out.sort_by_key(|b| b.binding);
    Ok(out)
}

/// The WGSL name of one element of a buffer's type (see [`BindingInfo::element`]).
fn element_of(module: &naga::Module, ty: naga::Handle<naga::Type>) -> String {
    match &module.types[ty].inner {
        naga::TypeInner::Array { base, .. } => type_name(module, *base),
        naga::TypeInner::Struct { members, .. } => match members.last() {
            Some(last)
                if matches!(
                    module.types[last.ty].inner,
                    naga::TypeInner::Array {
                        size: naga::ArraySize::Dynamic,
                        ..
                    }
                ) =>
            {
                element_of(module, last.ty)
            }
            _ => type_name(module, ty),
        },
        _ => type_name(module, ty),
    }
}

/// A type as WGSL writes it (`f32`, `vec4<u32>`, `mat4x4<f32>`, `array<f32, 4>`, a struct's
/// name).
fn type_name(module: &naga::Module, ty: naga::Handle<naga::Type>) -> String {
    let scalar = |s: naga::Scalar| {
        let kind = match s.kind {
            naga::ScalarKind::Sint => "i",
            naga::ScalarKind::Uint => "u",
            naga::ScalarKind::Float => "f",
            naga::ScalarKind::Bool => return "bool".to_owned(),
            _ => return format!("{s:?}"),
        };
        format!("{kind}{}", u32::from(s.width) * 8)
    };
    let t = &module.types[ty];
    match &t.inner {
        naga::TypeInner::Scalar(s) => scalar(*s),
        naga::TypeInner::Vector { size, scalar: s } => {
            format!("vec{}<{}>", *size as u8, scalar(*s))
        }
        naga::TypeInner::Matrix {
            columns,
            rows,
            scalar: s,
        } => {
            format!("mat{}x{}<{}>", *columns as u8, *rows as u8, scalar(*s))
        }
        naga::TypeInner::Atomic(s) => format!("atomic<{}>", scalar(*s)),
        naga::TypeInner::Array { base, size, .. } => match size {
            naga::ArraySize::Constant(n) => format!("array<{}, {n}>", type_name(module, *base)),
            _ => format!("array<{}>", type_name(module, *base)),
        },
        _ => t.name.clone().unwrap_or_else(|| "struct".to_owned()),
    }
}

/// (bytes before a trailing runtime-sized array, its stride, the minimum binding size) for a
/// buffer's type.
fn size_rule(
    module: &naga::Module,
    layouter: &naga::proc::Layouter,
    ty: naga::Handle<naga::Type>,
) -> (u64, Option<u64>, u64) {
    let dynamic_stride = |ty: naga::Handle<naga::Type>| match module.types[ty].inner {
        naga::TypeInner::Array {
            size: naga::ArraySize::Dynamic,
            stride,
            ..
        } => Some(u64::from(stride)),
        _ => None,
    };
    let align = |n: u64| {
        let a = u64::from(layouter[ty].alignment.round_up(1));
        n.div_ceil(a).saturating_mul(a)
    };
    match &module.types[ty].inner {
        naga::TypeInner::Array {
            size: naga::ArraySize::Dynamic,
            stride,
            ..
        } => (0, Some(u64::from(*stride)), u64::from(*stride)),
        naga::TypeInner::Struct { members, span } => {
            match members
                .last()
                .and_then(|last| Some((last, dynamic_stride(last.ty)?)))
            {
                Some((last, stride)) => {
                    let fixed = u64::from(last.offset);
                    (fixed, Some(stride), align(fixed + stride))
                }
                None => (u64::from(*span), None, u64::from(*span)),
            }
        }
        inner => {
            let size = u64::from(inner.size(module.to_ctx()));
            (size, None, size)
        }
    }
}
