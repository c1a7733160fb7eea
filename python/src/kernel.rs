//! `Kernel` and its bindings, as Python sees them.

use pyo3::prelude::*;

use wgpu_batch::BindingKind;

/// A compiled kernel: `engine.kernel(wgsl, entry=None, constants=None, label="kernel")`.
#[pyclass(frozen, module = "wgpu_batch")]
pub(crate) struct Kernel {
    pub(crate) inner: wgpu_batch::Kernel,
}

/// One binding of a kernel: its WGSL name, `@binding` number, kind (`"uniform"`, `"read"`,
/// `"read_write"`) and element type (`"f32"`, `"vec4<f32>"`, a struct's name).
#[pyclass(frozen, get_all, module = "wgpu_batch")]
pub(crate) struct Binding {
    name: String,
    binding: u32,
    kind: &'static str,
    element: String,
}

#[pymethods]
impl Binding {
    /// Unpacks as `name, binding, kind, element`.
    fn __iter__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, pyo3::types::PyIterator>> {
        let fields = (
            self.name.as_str(),
            self.binding,
            self.kind,
            self.element.as_str(),
        );
        fields.into_pyobject(py)?.try_iter()
    }

    fn __repr__(&self) -> String {
        format!(
            "Binding(name={:?}, binding={}, kind={:?}, element={:?})",
            self.name, self.binding, self.kind, self.element
        )
    }
}

#[pymethods]
impl Kernel {
    /// The label given when it was compiled.
    #[getter]
    fn label(&self) -> &str {
        self.inner.label()
    }

    /// The compute entry point.
    #[getter]
    fn entry(&self) -> &str {
        self.inner.entry_point()
    }

    /// `@workgroup_size(x, y, z)`.
    #[getter]
    fn workgroup_size(&self) -> (u32, u32, u32) {
        let [x, y, z] = self.inner.workgroup_size();
        (x, y, z)
    }

    /// The entry point's bindings, by binding number.
    #[getter]
    fn bindings(&self) -> Vec<Binding> {
        (self.inner.bindings().iter())
            .map(|b| Binding {
                name: b.name.clone(),
                binding: b.binding,
                kind: kind_name(b.kind),
                element: b.element.clone(),
            })
            .collect()
    }

    /// Why its jobs run one dispatch each rather than fused; None when they fuse.
    #[getter]
    fn unfused_reason(&self) -> Option<&str> {
        self.inner.unfused_reason()
    }

    fn __repr__(&self) -> String {
        let names: Vec<&str> = self
            .inner
            .bindings()
            .iter()
            .map(|b| b.name.as_str())
            .collect();
        format!(
            "Kernel({:?}, bindings=[{}])",
            self.inner.label(),
            names.join(", ")
        )
    }
}

/// How Python names a binding's kind.
pub(crate) fn kind_name(kind: BindingKind) -> &'static str {
    match kind {
        BindingKind::Uniform => "uniform",
        BindingKind::StorageRead => "read",
        BindingKind::StorageReadWrite => "read_write",
    }
}
