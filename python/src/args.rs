//! Python values bound to a kernel's bindings by WGSL name: numpy arrays (or anything numpy
//! takes as one: `__array_interface__`, the buffer protocol), raw bytes (`bytes`, `bytearray`
//! or a memoryview of bytes: never checked against the element type), Python numbers for scalar
//! bindings, [`Out`], [`Scratch`] and resident [`Buffer`]s. Arrays are read in place through
//! numpy's array interface (`array.rs`) and copied once, into the job, when it is built (the
//! GIL released for a large job: see `engine.rs`). Also Python seconds as a `Duration`
//! ([`seconds`]), for every timeout and time setting.

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyByteArray, PyBytes, PyDict, PyFloat, PyInt, PyMemoryView, PyTuple};
use wgpu_batch::{BindingInfo, BindingKind, Job};

use crate::array;
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
    /// numpy's type string (`<f4`), and its kind and item size.
    typestr: String,
    kind: u8,
    itemsize: usize,
}

#[pymethods]
impl Out {
    #[new]
    fn new(dtype: Py<PyAny>, shape: Py<PyTuple>, nbytes: u64, typestr: String) -> PyResult<Out> {
        let bytes = typestr.as_bytes();
        let itemsize = typestr.get(2..).and_then(|s| s.parse().ok());
        let (Some(&order), Some(&kind), Some(itemsize)) = (bytes.first(), bytes.get(1), itemsize)
        else {
            return Err(PyTypeError::new_err(format!(
                "not a numpy type string: {typestr:?}"
            )));
        };
        if order == b'>' && itemsize > 1 {
            return Err(PyTypeError::new_err(format!(
                "outputs come back little-endian; {typestr} is big-endian"
            )));
        }
        Ok(Out {
            dtype,
            shape,
            nbytes,
            typestr,
            kind,
            itemsize,
        })
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
    Uniform(Src),
    Input(Src),
    InOut(Src),
    Output(u64),
    Scratch { id: u32, bytes: u64 },
    Buffer(wgpu_batch::DeviceBuffer),
}

/// Where an argument's bytes are: an object's memory, or bytes of its own (a Python number).
pub(crate) enum Src {
    Raw(Raw),
    Own(Vec<u8>),
}

impl Src {
    pub(crate) fn bytes(&self) -> &[u8] {
        match self {
            Src::Raw(r) => r.bytes(),
            Src::Own(v) => v,
        }
    }
}

impl Data {
    /// Bytes on the device.
    fn size(&self) -> u64 {
        match self {
            Data::Uniform(s) | Data::Input(s) | Data::InOut(s) => s.bytes().len() as u64,
            Data::Output(n) | Data::Scratch { bytes: n, .. } => *n,
            Data::Buffer(b) => b.size(),
        }
    }

    /// Bytes the job copies from the host for this argument.
    pub(crate) fn host_bytes(&self) -> usize {
        match self {
            Data::Uniform(s) | Data::Input(s) | Data::InOut(s) => s.bytes().len(),
            _ => 0,
        }
    }
}

/// A binding whose contents come back: where, under what name, as what array.
pub(crate) struct Returned {
    pub(crate) step: usize,
    pub(crate) binding: u32,
    pub(crate) name: String,
    pub(crate) dtype: Py<PyAny>,
    pub(crate) shape: Py<PyAny>,
    /// Bytes of an array of that dtype and shape: what must come back.
    pub(crate) nbytes: usize,
}

/// A parsed step: its kernel, arguments and workgroups, and the Python objects whose memory
/// its `Raw`s point into.
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
                Data::Uniform(s) => j.uniform_bytes(*b, s.bytes()),
                Data::Input(s) => j.input::<u8>(*b, s.bytes()),
                Data::InOut(s) => j.inout::<u8>(*b, s.bytes()),
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
                // n=0 is zero workgroups, an error at submit (as `Job::workgroups_for(0)`).
                u32::try_from(n.div_ceil(per)).unwrap_or(u32::MAX),
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
            // `n_=` binds a WGSL variable called `n`, a name `submit` keeps for itself (as
            // are `workgroups`, `priority`, `timeout` and `device`).
            let find = |name: &str| k.bindings().iter().find(|b| b.name == name);
            let Some(info) = find(name).or_else(|| name.strip_suffix('_').and_then(find)) else {
                return Err(unknown(k, name));
            };
            let (data, back) = value_of(py, k, info, &value, &mut parser.scratch, &mut keep)?;
            if let Some((dtype, shape)) = back {
                let (binding, name) = (info.binding, info.name.clone());
                let nbytes = data.size() as usize;
                parser.returned.push(Returned {
                    step: index,
                    binding,
                    name,
                    dtype,
                    shape,
                    nbytes,
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
        check_dtype(py, k, info, out.kind, out.itemsize)?;
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
    if let Some(bytes) = number_bytes(py, k, info, value)? {
        check_size(py, k, info, bytes.len() as u64)?;
        let own = Src::Own(bytes);
        return Ok((
            if info.kind == BindingKind::Uniform {
                Data::Uniform(own)
            } else {
                Data::Input(own)
            },
            None,
        ));
    }
    let host = raw_of(py, k, info, value)?;
    let raw = Src::Raw(host.raw);
    check_size(py, k, info, host.raw.len as u64)?;
    keep.push(host.owner);
    Ok(match info.kind {
        BindingKind::Uniform => (Data::Uniform(raw), None),
        BindingKind::StorageRead => (Data::Input(raw), None),
        BindingKind::StorageReadWrite => (Data::InOut(raw), Some((host.dtype, host.shape))),
    })
}

/// A Python `float` or `int` bound to a read-only binding of `f32`, `i32` or `u32`: its
/// bytes as that type (no numpy round trip); None for anything else.
fn number_bytes(
    py: Python<'_>,
    k: &wgpu_batch::Kernel,
    info: &BindingInfo,
    value: &Bound<'_, PyAny>,
) -> PyResult<Option<Vec<u8>>> {
    let float = value.is_exact_instance_of::<PyFloat>();
    if info.kind == BindingKind::StorageReadWrite
        || !(float || value.is_exact_instance_of::<PyInt>())
    {
        return Ok(None);
    }
    let fits = |what: &str| {
        let problem = format!("the number does not fit {what}");
        errors::binding(py, k.label(), &info.name, info.binding, &problem)
    };
    let bytes = match scalar_of(&info.element) {
        Some("f32") => (value.extract::<f64>()? as f32).to_le_bytes(),
        Some("i32") if !float => value
            .extract::<i32>()
            .map_err(|_| fits("an i32"))?
            .to_le_bytes(),
        Some("u32") if !float => value
            .extract::<u32>()
            .map_err(|_| fits("a u32"))?
            .to_le_bytes(),
        _ => return Ok(None),
    };
    Ok(Some(bytes.to_vec()))
}

/// The memory of an array-like value, checked against the binding's element type unless it
/// is raw bytes; the dtype and shape it comes back as (an inout); the object that owns the
/// memory.
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
    // Python's other bytes-like objects are raw bytes too, read through numpy (whose view
    // holds a buffer export, so a bytearray cannot be resized while the job is copied).
    let raw_bytes = value.is_instance_of::<PyByteArray>()
        || (value.is_instance_of::<PyMemoryView>()
            && value
                .getattr(pyo3::intern!(py, "format"))?
                .extract::<String>()?
                == "B");
    let value = array_like(py, k, info, value)?;
    let view = array::view(py, &value)?;
    let fail = |problem: String| errors::binding(py, k.label(), &info.name, info.binding, &problem);
    if view.swapped {
        return Err(fail(
            "the array is big-endian: pass arr.astype(arr.dtype.newbyteorder('<'))".into(),
        ));
    }
    if !raw_bytes {
        check_dtype(py, k, info, view.kind, view.itemsize)?;
    }
    if !view.contiguous {
        return Err(fail(
            "the array is not contiguous: pass np.ascontiguousarray(...)".into(),
        ));
    }
    let (dtype, shape) = if info.kind == BindingKind::StorageReadWrite {
        let dtype = value.getattr(pyo3::intern!(py, "dtype"))?;
        (
            dtype.unbind(),
            value.getattr(pyo3::intern!(py, "shape"))?.unbind(),
        )
    } else {
        (py.None(), py.None())
    };
    Ok(Host {
        raw: Raw::new(view.data, view.len),
        dtype,
        shape,
        owner: view.owner,
    })
}

/// `value` as something with numpy's array interface: itself, a Python number as the
/// binding's scalar type, or `numpy.asarray` of it (the buffer protocol, `__array_interface__`).
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
    if array::has(py, value)? {
        return Ok(value.clone());
    }
    let not_data = || {
        let kind = value.get_type().name().map(|n| n.to_string());
        let problem = format!(
            "expected a numpy array, bytes or a buffer; got {}",
            kind.unwrap_or_default()
        );
        errors::binding(py, k.label(), &info.name, info.binding, &problem)
    };
    let array = numpy(py)?
        .call_method1("asarray", (value,))
        .map_err(|_| not_data())?;
    // numpy makes an array of anything (None, a string): only numbers are data here.
    let kind = array.getattr("dtype")?.getattr("kind")?;
    if ["O", "U", "S"].iter().any(|k| kind.eq(*k).unwrap_or(false)) {
        return Err(not_data());
    }
    Ok(array)
}

/// A Python number of seconds (a timeout, an engine setting) as a `Duration`.
pub(crate) fn seconds(s: f64) -> PyResult<std::time::Duration> {
    std::time::Duration::try_from_secs_f64(s).map_err(|_| {
        pyo3::exceptions::PyValueError::new_err(format!(
            "expected a finite number of seconds >= 0, got {s}"
        ))
    })
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
    kind: u8,
    itemsize: usize,
) -> PyResult<()> {
    let Some(scalar) = scalar_of(&info.element) else {
        return Ok(());
    };
    let want = typestr_of(Some(scalar)).as_bytes();
    if kind == want[1] && itemsize == usize::from(want[2] - b'0') {
        return Ok(());
    }
    let numpy_name = match scalar {
        "f32" => "float32",
        "i32" => "int32",
        "u32" => "uint32",
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
            dtype_name(kind, itemsize)
        ),
    ))
}

/// numpy's name for an element kind and size (`f`, 8: float64).
fn dtype_name(kind: u8, itemsize: usize) -> String {
    let name = match kind {
        b'f' => "float",
        b'i' => "int",
        b'u' => "uint",
        b'c' => "complex",
        b'b' => return "bool".into(),
        b'V' => return format!("a structured or void type of {itemsize} bytes"),
        other => return format!("kind {:?} of {itemsize} bytes", other as char),
    };
    format!("{name}{}", itemsize * 8)
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
