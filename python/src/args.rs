//! Python values bound to a kernel's bindings by WGSL name: numpy arrays (or anything with
//! `__array_interface__`, or the buffer protocol through `numpy.asarray`), bytes, Python
//! numbers for scalar uniforms, [`Out`], [`Scratch`] and resident [`Buffer`]s. Arrays are
//! read in place (their memory, no copy in Python) when the job is built, with the GIL
//! released.

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyDict, PyFloat, PyInt, PyTuple};
use wgpu_batch::{BindingInfo, BindingKind, Job};

use crate::buffer::Buffer;
use crate::errors;
use crate::kernel::{Kernel, kind_name};

/// `numpy`, imported once.
static NUMPY: PyOnceLock<Py<PyModule>> = PyOnceLock::new();

pub(crate) fn numpy(py: Python<'_>) -> PyResult<&Bound<'_, PyModule>> {
    NUMPY
        .get_or_try_init(py, || py.import("numpy").map(Bound::unbind))
        .map(|m| m.bind(py))
}

/// An output to allocate: `wgpu_batch.out(dtype, shape)`.
#[pyclass(frozen, module = "wgpu_batch")]
pub(crate) struct Out {
    dtype: Py<PyAny>,
    shape: Py<PyTuple>,
    nbytes: u64,
    typestr: String,
}

#[pymethods]
impl Out {
    #[new]
    fn new(dtype: Py<PyAny>, shape: Py<PyTuple>, nbytes: u64, typestr: String) -> Out {
        Out {
            dtype,
            shape,
            nbytes,
            typestr,
        }
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        format!("out({}, {})", self.typestr, self.shape.bind(py))
    }
}

/// Device memory that lives for one job, shared by every step that binds the same object:
/// `wgpu_batch.scratch(dtype, shape)`.
#[pyclass(frozen, module = "wgpu_batch")]
pub(crate) struct Scratch {
    nbytes: u64,
}

#[pymethods]
impl Scratch {
    #[new]
    fn new(nbytes: u64) -> Scratch {
        Scratch { nbytes }
    }
}

/// An array's memory, the dtype and shape it comes back as, and the object owning it.
pub(crate) struct Host {
    pub(crate) raw: Raw,
    pub(crate) dtype: Py<PyAny>,
    pub(crate) shape: Py<PyAny>,
    pub(crate) owner: Py<PyAny>,
}

/// Memory the GIL-free part reads: valid while the object that owns it is held.
#[derive(Clone, Copy)]
pub(crate) struct Raw {
    ptr: *const u8,
    len: usize,
}

// SAFETY: a `Raw` is read only while the Python object owning the memory is referenced by the
// thread that built it (see `Step`), which waits for the reader.
unsafe impl Send for Raw {}
// SAFETY: as for `Send`; a `Raw` is only read through.
unsafe impl Sync for Raw {}

impl Raw {
    pub(crate) fn new(ptr: usize, len: usize) -> Raw {
        Raw {
            ptr: ptr as *const u8,
            len,
        }
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        if self.len == 0 {
            return &[];
        }
        // SAFETY: see the `Send` impl; the pointer and length come from the array's interface.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

/// One argument, ready to add to a job.
pub(crate) enum Data {
    Uniform(Raw),
    Input(Raw),
    InOut(Raw),
    Output(u64),
    Scratch { id: u32, bytes: u64 },
    Buffer(wgpu_batch::DeviceBuffer),
}

/// A binding whose contents come back: where, under what name, as what array.
pub(crate) struct Returned {
    pub(crate) step: usize,
    pub(crate) binding: u32,
    pub(crate) name: String,
    pub(crate) dtype: Py<PyAny>,
    pub(crate) shape: Py<PyAny>,
}

/// A parsed step: its kernel, arguments and workgroups; `keep` holds the Python objects whose
/// memory `Raw`s point into.
pub(crate) struct Step {
    pub(crate) kernel: wgpu_batch::Kernel,
    pub(crate) args: Vec<(u32, Data)>,
    pub(crate) workgroups: (u32, u32, u32),
    /// Held, never read: the objects whose memory the `Raw`s point into.
    pub(crate) _owners: Vec<Py<PyAny>>,
}

/// Adds the steps to a job (the data is copied here: run it with the GIL released).
pub(crate) fn build(steps: &[Step]) -> Option<Job> {
    let mut job: Option<Job> = None;
    for s in steps {
        let mut j = match job {
            None => Job::new(&s.kernel),
            Some(j) => j.then(&s.kernel),
        };
        j = j.workgroups(s.workgroups.0, s.workgroups.1, s.workgroups.2);
        for (b, data) in &s.args {
            j = match data {
                Data::Uniform(r) => j.uniform_bytes(*b, r.bytes()),
                Data::Input(r) => j.input::<u8>(*b, r.bytes()),
                Data::InOut(r) => j.inout::<u8>(*b, r.bytes()),
                Data::Output(n) => j.output::<u8>(*b, *n as usize),
                Data::Scratch { id, bytes } => j.scratch::<u8>(*b, *id, *bytes as usize),
                Data::Buffer(buf) => j.buffer(*b, buf),
            };
        }
        job = Some(j);
    }
    job
}

/// Scratch objects seen so far in a job, by identity, and their ids.
#[derive(Default)]
pub(crate) struct ScratchIds(Vec<(usize, u32)>);

impl ScratchIds {
    fn id(&mut self, obj: &Bound<'_, PyAny>) -> u32 {
        let key = obj.as_ptr() as usize;
        if let Some((_, id)) = self.0.iter().find(|(k, _)| *k == key) {
            return *id;
        }
        let id = self.0.len() as u32;
        self.0.push((key, id));
        id
    }
}

/// What parsing a job's steps gathers: scratch ids and the bindings that come back.
#[derive(Default)]
pub(crate) struct Parser {
    scratch: ScratchIds,
    pub(crate) returned: Vec<Returned>,
    steps: usize,
}

impl Parser {
    /// Parses the next step: `bindings` by name against `kernel`; workgroups from
    /// `workgroups` or `n`.
    pub(crate) fn step(
        &mut self,
        py: Python<'_>,
        kernel: &Kernel,
        bindings: &Bound<'_, PyDict>,
        workgroups: Option<(u32, u32, u32)>,
        n: Option<usize>,
    ) -> PyResult<Step> {
        let index = self.steps;
        self.steps += 1;
        step(py, index, kernel, bindings, (workgroups, n), self)
    }
}

fn step(
    py: Python<'_>,
    index: usize,
    kernel: &Kernel,
    bindings: &Bound<'_, PyDict>,
    (workgroups, n): (Option<(u32, u32, u32)>, Option<usize>),
    parser: &mut Parser,
) -> PyResult<Step> {
    let k = &kernel.inner;
    let workgroups = match (workgroups, n) {
        (Some(w), None) => w,
        (None, Some(n)) => {
            let per = k.workgroup_size()[0].max(1) as usize;
            (
                u32::try_from(n.div_ceil(per).max(1)).unwrap_or(u32::MAX),
                1,
                1,
            )
        }
        _ => {
            return Err(PyTypeError::new_err(format!(
                "kernel `{}`: give workgroups=(x, y, z) or n=<invocations> (one of them)",
                k.label()
            )));
        }
    };
    let mut args = Vec::with_capacity(k.bindings().len());
    let mut keep = Vec::new();
    {
        for (name, value) in bindings.iter() {
            let name: &str = &name.extract::<pyo3::pybacked::PyBackedStr>()?;
            let Some(info) = k.bindings().iter().find(|b| b.name == name) else {
                return Err(unknown(k, name));
            };
            let (data, back) = value_of(py, k, info, &value, &mut parser.scratch, &mut keep)?;
            if let Some((dtype, shape)) = back {
                let (binding, name) = (info.binding, info.name.clone());
                parser.returned.push(Returned {
                    step: index,
                    binding,
                    name,
                    dtype,
                    shape,
                });
            }
            args.push((info.binding, data));
        }
    }
    if let Some(missing) =
        (k.bindings().iter()).find(|b| !args.iter().any(|(n, _)| *n == b.binding))
    {
        return Err(PyTypeError::new_err(format!(
            "kernel `{}`: missing binding `{}` (@binding({}), {})",
            k.label(),
            missing.name,
            missing.binding,
            kind_name(missing.kind)
        )));
    }
    Ok(Step {
        kernel: k.clone(),
        args,
        workgroups,
        _owners: keep,
    })
}

fn unknown(k: &wgpu_batch::Kernel, name: &str) -> PyErr {
    let names: Vec<&str> = k.bindings().iter().map(|b| b.name.as_str()).collect();
    PyTypeError::new_err(format!(
        "kernel `{}` has no binding `{name}`; its bindings are: {}",
        k.label(),
        names.join(", ")
    ))
}

/// The dtype and shape an inout or output comes back as.
type Back = Option<(Py<PyAny>, Py<PyAny>)>;

/// What `value` bound to `info` becomes, and how it comes back (inouts and outputs).
fn value_of(
    py: Python<'_>,
    k: &wgpu_batch::Kernel,
    info: &BindingInfo,
    value: &Bound<'_, PyAny>,
    scratch: &mut ScratchIds,
    keep: &mut Vec<Py<PyAny>>,
) -> PyResult<(Data, Back)> {
    let wrong = |what: &str| {
        errors::binding(
            py,
            k.label(),
            &info.name,
            info.binding,
            &format!("a {} binding cannot take {what}", kind_name(info.kind)),
        )
    };
    if let Ok(out) = value.cast::<Out>() {
        if info.kind != BindingKind::StorageReadWrite {
            return Err(wrong("an output (wgpu_batch.out)"));
        }
        let out = out.get();
        check_dtype(py, k, info, &out.typestr)?;
        check_size(py, k, info, out.nbytes)?;
        let back = (out.dtype.clone_ref(py), out.shape.clone_ref(py).into_any());
        return Ok((Data::Output(out.nbytes), Some(back)));
    }
    if let Ok(s) = value.cast::<Scratch>() {
        if info.kind == BindingKind::Uniform {
            return Err(wrong("scratch memory"));
        }
        let bytes = s.get().nbytes;
        check_size(py, k, info, bytes)?;
        return Ok((
            Data::Scratch {
                id: scratch.id(value),
                bytes,
            },
            None,
        ));
    }
    if let Ok(b) = value.cast::<Buffer>() {
        if info.kind == BindingKind::Uniform {
            return Err(wrong("a resident buffer"));
        }
        return Ok((Data::Buffer(b.get().inner.clone()), None));
    }
    let host = raw_of(py, k, info, value)?;
    let raw = host.raw;
    check_size(py, k, info, raw.len as u64)?;
    keep.push(host.owner);
    Ok(match info.kind {
        BindingKind::Uniform => (Data::Uniform(raw), None),
        BindingKind::StorageRead => (Data::Input(raw), None),
        BindingKind::StorageReadWrite => (Data::InOut(raw), Some((host.dtype, host.shape))),
    })
}

/// The memory of an array-like value, checked against the binding's element type; the
/// dtype and shape it comes back as (an inout); the object that owns the memory.
fn raw_of(
    py: Python<'_>,
    k: &wgpu_batch::Kernel,
    info: &BindingInfo,
    value: &Bound<'_, PyAny>,
) -> PyResult<Host> {
    if let Ok(b) = value.cast::<PyBytes>() {
        let bytes = b.as_bytes();
        return Ok(Host {
            raw: Raw::new(bytes.as_ptr() as usize, bytes.len()),
            dtype: numpy(py)?.getattr("uint8")?.unbind(),
            shape: PyTuple::new(py, [bytes.len()])?.into_any().unbind(),
            owner: value.clone().unbind(),
        });
    }
    let value = array_like(py, k, info, value)?;
    let iface = value.getattr(pyo3::intern!(py, "__array_interface__"))?;
    let iface = iface.cast::<PyDict>()?;
    let get = |key: &str| -> PyResult<Bound<'_, PyAny>> {
        iface
            .get_item(key)?
            .ok_or_else(|| PyTypeError::new_err(format!("__array_interface__ has no `{key}`")))
    };
    let typestr: String = get("typestr")?.extract()?;
    let (ptr, _readonly): (usize, bool) = get("data")?.extract()?;
    let shape: Vec<usize> = get("shape")?.extract()?;
    let item = typestr
        .get(2..)
        .and_then(|s| s.parse::<usize>().ok())
        .unwrap_or(0);
    let fail = |problem: String| errors::binding(py, k.label(), &info.name, info.binding, &problem);
    if typestr.starts_with('>') && item > 1 {
        return Err(fail(format!(
            "the array is big-endian ({typestr}): pass arr.astype(arr.dtype.newbyteorder('<'))"
        )));
    }
    check_dtype(py, k, info, &typestr)?;
    let strides = get("strides")?;
    if !strides.is_none() {
        let strides: Vec<isize> = strides.extract()?;
        if !c_contiguous(&shape, &strides, item) {
            return Err(fail(format!(
                "the array is not contiguous (strides {strides:?}): pass np.ascontiguousarray(...)"
            )));
        }
    }
    let len = shape.iter().product::<usize>() * item;
    let (dtype, shape) = if info.kind == BindingKind::StorageReadWrite {
        let dtype = (value.getattr(pyo3::intern!(py, "dtype"))).or_else(|_| get("typestr"))?;
        (dtype.unbind(), get("shape")?.unbind())
    } else {
        (py.None(), py.None())
    };
    // Keep the interface too: a numpy scalar's memory lives in an array it references.
    let owner = PyTuple::new(py, [value.clone(), iface.clone().into_any()])?
        .into_any()
        .unbind();
    Ok(Host {
        raw: Raw::new(ptr, len),
        dtype,
        shape,
        owner,
    })
}

/// `value` as something with `__array_interface__`: itself, a Python number as the binding's
/// scalar type, or `numpy.asarray` of it (the buffer protocol).
fn array_like<'py>(
    py: Python<'py>,
    k: &wgpu_batch::Kernel,
    info: &BindingInfo,
    value: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    let scalar = scalar_of(&info.element);
    let number = value.is_exact_instance_of::<PyFloat>() || value.is_exact_instance_of::<PyInt>();
    if number && scalar.is_some() {
        // A Python number for a scalar binding: as the binding's element type.
        return numpy(py)?.call_method1("array", (value, typestr_of(scalar)));
    }
    if value.hasattr(pyo3::intern!(py, "__array_interface__"))? {
        return Ok(value.clone());
    }
    numpy(py)?.call_method1("asarray", (value,)).map_err(|_| {
        errors::binding(
            py,
            k.label(),
            &info.name,
            info.binding,
            &format!(
                "expected a numpy array, bytes or a buffer; got {}",
                value
                    .get_type()
                    .name()
                    .map(|n| n.to_string())
                    .unwrap_or_default()
            ),
        )
    })
}

fn c_contiguous(shape: &[usize], strides: &[isize], item: usize) -> bool {
    let mut expect = item as isize;
    for (dim, stride) in shape.iter().zip(strides).rev() {
        if *dim > 1 && *stride != expect {
            return false;
        }
        expect *= *dim as isize;
    }
    true
}

/// The scalar type (`f32`, `u32`, ...) an element type is made of, when it is one.
fn scalar_of(element: &str) -> Option<&str> {
    let inner = match element.find('<') {
        Some(at)
            if ["vec", "mat", "atomic"]
                .iter()
                .any(|p| element.starts_with(p)) =>
        {
            element[at + 1..].trim_end_matches('>')
        }
        _ => element,
    };
    ["f32", "i32", "u32", "f16"]
        .contains(&inner)
        .then_some(inner)
}

/// numpy's type string for a WGSL scalar.
fn typestr_of(scalar: Option<&str>) -> &'static str {
    match scalar {
        Some("f32") => "<f4",
        Some("i32") => "<i4",
        Some("u32") => "<u4",
        Some("f16") => "<f2",
        _ => "|u1",
    }
}

/// An array's element type must be the binding's scalar (any type for a struct binding).
fn check_dtype(
    py: Python<'_>,
    k: &wgpu_batch::Kernel,
    info: &BindingInfo,
    typestr: &str,
) -> PyResult<()> {
    let Some(scalar) = scalar_of(&info.element) else {
        return Ok(());
    };
    let want = typestr_of(Some(scalar));
    let same = typestr.get(1..) == want.get(1..) && !typestr.starts_with('>');
    if same {
        return Ok(());
    }
    let numpy_name = match want {
        "<f4" => "float32",
        "<i4" => "int32",
        "<u4" => "uint32",
        _ => "float16",
    };
    Err(errors::binding(
        py,
        k.label(),
        &info.name,
        info.binding,
        &format!(
            "the kernel reads {} elements, the array holds {}: pass arr.astype(np.{numpy_name})",
            info.element,
            dtype_name(typestr)
        ),
    ))
}

/// numpy's name for a type string (`<f8`: float64), or the string itself.
fn dtype_name(typestr: &str) -> String {
    let bits = typestr
        .get(2..)
        .and_then(|s| s.parse::<u32>().ok())
        .map(|b| b * 8);
    let kind = match typestr.as_bytes().get(1) {
        Some(b'f') => "float",
        Some(b'i') => "int",
        Some(b'u') => "uint",
        Some(b'c') => "complex",
        Some(b'b') => return "bool".into(),
        Some(b'V') => return format!("a structured or void type ({typestr})"),
        _ => return typestr.into(),
    };
    bits.map_or_else(|| typestr.into(), |b| format!("{kind}{b}"))
}

fn check_size(
    py: Python<'_>,
    k: &wgpu_batch::Kernel,
    info: &BindingInfo,
    bytes: u64,
) -> PyResult<()> {
    info.check_size(bytes)
        .map_err(|problem| errors::binding(py, k.label(), &info.name, info.binding, &problem))
}
