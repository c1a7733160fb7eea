//! Kernels: WGSL source validated and reflected with naga on the caller's thread.
//!
//! A [`Kernel`] knows its compute entry point, its workgroup size and every `@group(0)` buffer
//! binding the entry point uses (uniform or storage, read-only or read-write, and the sizes a
//! buffer bound there may have). Jobs are checked against this reflection before they are queued,
//! so a wrong argument is an [`Error::Binding`] at submit time, never a wgpu validation panic.
//! Pipelines are created per device and cached there, keyed by [`Kernel::id`].

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use wgpu::naga;

use crate::error::{Error, Result};
use crate::kernel::binding::{BindingInfo, reflect_bindings};
use crate::kernel::fusion::{Fused, FusedBinding, fuse};

/// WGSL source for a kernel, before validation. Build one with [`KernelSource::wgsl`].
#[derive(Debug, Clone)]
pub struct KernelSource {
    label: String,
    source: Cow<'static, str>,
    entry_point: Option<String>,
    /// Values for the module's `override` declarations, by name (or `@id` number).
    constants: Vec<(String, f64)>,
}

impl KernelSource {
    /// WGSL source with a label used in errors and logs.
    pub fn wgsl(label: impl Into<String>, source: impl Into<Cow<'static, str>>) -> Self {
        KernelSource {
            label: label.into(),
            source: source.into(),
            entry_point: None,
            constants: Vec::new(),
        }
    }

    /// Sets a pipeline-overridable constant (`override name: T = default;`), by name or by
    /// its `@id` number, for reflection (an override-sized `@workgroup_size`, an override-sized
    /// array) and for the pipeline alike. Overrides without a value keep their default.
    pub fn constant(mut self, name: impl Into<String>, value: f64) -> Self {
        self.constants.push((name.into(), value));
        self
    }

    /// Chooses the `@compute` entry point. Needed only when the module has several.
    pub fn entry_point(mut self, name: impl Into<String>) -> Self {
        self.entry_point = Some(name.into());
        self
    }

    /// The WGSL source.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The label.
    pub fn label(&self) -> &str {
        &self.label
    }
}

/// A validated, reflected compute kernel. Cheap to clone; shared by every job that runs it.
#[derive(Debug, Clone)]
pub struct Kernel {
    inner: Arc<KernelInner>,
}

#[derive(Debug)]
pub(crate) struct KernelInner {
    pub(crate) id: u64,
    pub(crate) label: String,
    /// The validated module, flattened (see `kernel/flatten.rs`), overrides unresolved: what every
    /// device's pipeline is built from, so wgpu never parses the source text again.
    pub(crate) module: Arc<naga::Module>,
    pub(crate) entry_point: String,
    pub(crate) workgroup_size: [u32; 3],
    pub(crate) bindings: Vec<BindingInfo>,
    /// Bytes of `var<workgroup>` the entry point uses (each rounded up to 16, as WebGPU counts).
    pub(crate) workgroup_memory: u64,
    /// The overrides given in the source, passed to every pipeline.
    pub(crate) constants: Vec<(String, f64)>,
    /// The kernel rewritten for fusion, or why it cannot be (see `kernel/fusion.rs`).
    pub(crate) fused: std::result::Result<Arc<Fused>, String>,
}

/// The stack of the thread that parses a kernel. Measured: an expression nested as deep as
/// [`MAX_OPERATORS`] allows parses in 8 MiB (naga built optimized, as this crate's profiles
/// build it) and overflows 4 MiB; 64 MiB leaves room for a naga built without optimization.
/// Only what is touched is committed.
const COMPILE_STACK: usize = 64 << 20;

/// The deepest an expression may nest (read off the text, see [`too_deep`]); a deeper one is
/// an [`Error::Shader`] before anything parses it (see [`Kernel::compile`]). It also bounds
/// the time a hostile kernel costs: naga's passes grow faster than linearly with one
/// expression's size (measured: 20,000 terms 14 s, 99,000 terms 5.5 min and 750 MB, debug
/// build).
const MAX_OPERATORS: usize = 25_000;

/// Why `source` is refused before parsing: an expression that may nest more than
/// [`MAX_OPERATORS`] deep. The bound is read off the text without parsing it: within a
/// statement, each bracket level counts its operators since the last comma (the terms of one
/// argument chain into one another; separate arguments do not nest), and an expression can
/// nest no deeper than the open brackets plus the operators counted on every open level.
/// Comments count too, which only errs on the safe side; a long list of arguments (a table
/// of constants) does not.
fn too_deep(source: &str) -> Option<String> {
    let (mut line, mut start) = (1usize, 1usize);
    // Operators since the last comma on the innermost open level, and on each enclosing one.
    let (mut top, mut outer) = (0usize, Vec::<usize>::new());
    let mut depth = 0usize; // brackets open plus the operators counted on every level
    for c in source.chars() {
        match c {
            ';' | '{' | '}' => {
                (top, depth, start) = (0, 0, line);
                outer.clear();
                continue;
            }
            '\n' => line += 1,
            '(' | '[' => {
                outer.push(top);
                (top, depth) = (0, depth + 1);
            }
            ')' | ']' => {
                if let Some(enclosing) = outer.pop() {
                    depth -= top + 1;
                    top = enclosing;
                }
            }
            ',' => (depth, top) = (depth - top, 0),
            '+' | '-' | '*' | '/' | '%' | '&' | '|' | '^' | '<' | '>' | '!' | '~' | '=' => {
                (top, depth) = (top + 1, depth + 1);
            }
            _ => {}
        }
        if depth > MAX_OPERATORS {
            return Some(format!(
                "an expression in the statement from line {start} nests more than \
                 {MAX_OPERATORS} deep; split it into several with `let`"
            ));
        }
    }
    None
}

/// Source of [`Kernel::id`]: unique per process so per-device pipeline caches never confuse
/// two kernels, even across engines.
static NEXT_KERNEL_ID: AtomicU64 = AtomicU64::new(1);

impl Kernel {
    /// Parses, validates and reflects `src` with naga. Needs no device. Overrides are
    /// resolved first (with [`KernelSource::constant`] values, else their defaults), so an
    /// override-sized workgroup is reflected at its real size.
    ///
    /// Untrusted source cannot take the process down: parsing recurses once per level of an
    /// expression, so it runs on a thread of its own with a 64 MiB stack (only what is
    /// touched is committed), and an expression that may nest more than 25,000 deep is
    /// refused first (an [`Error::Shader`] saying to split it). A panic inside naga is an
    /// `Error::Shader` too.
    pub fn compile(src: KernelSource) -> Result<Kernel> {
        let label = src.label.clone();
        let shader_err = |message: String| Error::Shader {
            kernel: label.clone(),
            message,
        };
        too_deep(&src.source).map_or(Ok(()), |m| Err(shader_err(m)))?;
        // A system that will not map the stack (strict overcommit) compiles on this thread:
        // the nesting bound above keeps that within a main thread's 8 MiB.
        std::thread::scope(|scope| {
            let compiling = std::thread::Builder::new()
                .name("wgpu-batch compile".into())
                .stack_size(COMPILE_STACK)
                .spawn_scoped(scope, || Kernel::compile_here(&src));
            let Ok(compiling) = compiling else {
                log::warn!("no thread for compiling kernel `{label}`: compiling it on this thread");
                return Kernel::compile_here(&src);
            };
            compiling.join().unwrap_or_else(|panic| {
                let why = crate::error::panic_message(&*panic).unwrap_or("unknown panic");
                Err(shader_err(format!("naga panicked on this kernel: {why}")))
            })
        })
    }

    /// [`compile`](Kernel::compile)'s work, on the calling thread.
    fn compile_here(src: &KernelSource) -> Result<Kernel> {
        let shader_err = |message: String| Error::Shader {
            kernel: src.label.clone(),
            message,
        };
        let mut module = naga::front::wgsl::parse_str(&src.source)
            .map_err(|e| shader_err(e.emit_to_string(&src.source)))?;
        crate::kernel::flatten::flatten(&mut module);
        let info = naga::valid::Validator::new(
            naga::valid::ValidationFlags::all(),
            naga::valid::Capabilities::all(),
        )
        .validate(&module)
        .map_err(|e| shader_err(e.emit_to_string(&src.source)))?;
        let index = find_entry_point(&module, src.entry_point.as_deref()).map_err(shader_err)?;
        let name = module.entry_points[index].name.clone();
        let constants: naga::back::PipelineConstants = src.constants.iter().cloned().collect();
        let original = module.clone(); // what pipelines are built from, overrides and all
        let (module, info) = naga::back::pipeline_constants::process_overrides(
            &module,
            &info,
            Some((naga::ShaderStage::Compute, &name)),
            &constants,
        )
        .map_err(|e| shader_err(format!("resolving overrides: {e}")))?;
        let index = find_entry_point(&module, Some(&name)).map_err(shader_err)?;
        let uses = info.get_entry_point(index);
        let bindings = reflect_bindings(&module, uses).map_err(shader_err)?;
        let fused = fuse(&module, index, &bindings).map(Arc::new);
        if let Err(reason) = &fused {
            log::info!("kernel `{}` runs unfused: {reason}", src.label);
        }
        Ok(Kernel {
            inner: Arc::new(KernelInner {
                id: NEXT_KERNEL_ID.fetch_add(1, Ordering::Relaxed),
                module: Arc::new(original),
                entry_point: name,
                workgroup_size: module.entry_points[index].workgroup_size,
                bindings,
                workgroup_memory: workgroup_memory(&module, uses),
                constants: src.constants.clone(),
                fused,
                label: src.label.clone(),
            }),
        })
    }

    /// Checks the kernel against a device's limits that wgpu 30 does not check itself (the
    /// workgroup memory) or reports only as a pipeline error (the workgroup size).
    pub(crate) fn check_limits(&self, limits: &wgpu::Limits) -> Result<()> {
        let [x, y, z] = self.inner.workgroup_size;
        // wgpu refuses a binding number at or past this limit when it builds the layout.
        if let Some(last) = self.inner.bindings.iter().map(|b| b.binding).max()
            && last >= limits.max_bindings_per_bind_group
        {
            return Err(Error::Limit {
                what: "binding number",
                requested: u64::from(last),
                limit: u64::from(limits.max_bindings_per_bind_group.saturating_sub(1)),
            });
        }
        let invocations = u64::from(x)
            .saturating_mul(u64::from(y))
            .saturating_mul(u64::from(z));
        let checks = [
            (
                "workgroup_size x",
                u64::from(x),
                limits.max_compute_workgroup_size_x,
            ),
            (
                "workgroup_size y",
                u64::from(y),
                limits.max_compute_workgroup_size_y,
            ),
            (
                "workgroup_size z",
                u64::from(z),
                limits.max_compute_workgroup_size_z,
            ),
            (
                "invocations per workgroup",
                invocations,
                limits.max_compute_invocations_per_workgroup,
            ),
            (
                "bytes of var<workgroup> memory",
                self.inner.workgroup_memory,
                limits.max_compute_workgroup_storage_size,
            ),
        ];
        match checks
            .into_iter()
            .find(|&(_, got, max)| got > u64::from(max))
        {
            Some((what, requested, limit)) => Err(Error::Limit {
                what,
                requested,
                limit: u64::from(limit),
            }),
            None => Ok(()),
        }
    }

    /// Why jobs of this kernel run one dispatch each even when a batch holds several of them;
    /// `None` when they can be fused into one dispatch (see
    /// [`EngineBuilder::fusion`](crate::EngineBuilder::fusion)).
    pub fn unfused_reason(&self) -> Option<&str> {
        self.inner.fused.as_ref().err().map(String::as_str)
    }

    /// How each binding's jobs share it in a fused dispatch; `None` when the kernel is not
    /// fused.
    pub fn fused_bindings(&self) -> Option<&[FusedBinding]> {
        self.inner
            .fused
            .as_ref()
            .ok()
            .map(|f| f.bindings.as_slice())
    }

    /// Bytes of `var<workgroup>` memory the entry point uses.
    pub fn workgroup_memory(&self) -> u64 {
        self.inner.workgroup_memory
    }

    /// The label given in [`KernelSource::wgsl`].
    pub fn label(&self) -> &str {
        &self.inner.label
    }

    /// The compute entry point's name.
    pub fn entry_point(&self) -> &str {
        &self.inner.entry_point
    }

    /// `@workgroup_size(x, y, z)` of the entry point.
    pub fn workgroup_size(&self) -> [u32; 3] {
        self.inner.workgroup_size
    }

    /// The entry point's `@group(0)` buffer bindings, sorted by binding number.
    pub fn bindings(&self) -> &[BindingInfo] {
        &self.inner.bindings
    }

    /// Process-unique id; the key of every device's pipeline cache.
    pub fn id(&self) -> u64 {
        self.inner.id
    }

    /// The number of the binding whose WGSL variable is called `name`: so a job can bind by
    /// name, `Job::new(&k).input(k.binding_number("x")?, &x)`. An [`Error::Binding`] lists the
    /// names there are when none is called that.
    pub fn binding_number(&self, name: &str) -> Result<u32> {
        if let Some(b) = self.bindings().iter().find(|b| b.name == name) {
            return Ok(b.binding);
        }
        let names: Vec<&str> = self.bindings().iter().map(|b| b.name.as_str()).collect();
        let problem = format!(
            "no binding is called `{name}` (it has: {})",
            names.join(", ")
        );
        Err(Error::Binding {
            kernel: self.label().to_owned(),
            binding: u32::MAX,
            problem,
        })
    }

    /// The reflected binding `n`, if the entry point uses it.
    pub(crate) fn binding(&self, n: u32) -> Option<&BindingInfo> {
        self.inner.bindings.iter().find(|b| b.binding == n)
    }

    pub(crate) fn inner(&self) -> &Arc<KernelInner> {
        &self.inner
    }
}

/// The index of the requested compute entry point, or the only one when none was named.
fn find_entry_point(
    module: &naga::Module,
    name: Option<&str>,
) -> std::result::Result<usize, String> {
    let compute: Vec<(usize, &str)> = module
        .entry_points
        .iter()
        .enumerate()
        .filter(|(_, ep)| ep.stage == naga::ShaderStage::Compute)
        .map(|(i, ep)| (i, ep.name.as_str()))
        .collect();
    let names = || {
        compute
            .iter()
            .map(|(_, n)| *n)
            .collect::<Vec<_>>()
            .join(", ")
    };
    match (name, compute.as_slice()) {
        (_, []) => Err("the module has no @compute entry point".into()),
        (None, [(i, _)]) => Ok(*i),
        (None, _) => Err(format!(
            "several @compute entry points ({}); name one",
            names()
        )),
        (Some(want), _) => compute
            .iter()
            .find(|(_, n)| *n == want)
            .map(|(i, _)| *i)
            .ok_or_else(|| {
                format!(
                    "no @compute entry point named `{want}` (found: {})",
                    names()
                )
            }),
    }
}

/// Bytes of the `var<workgroup>` globals `uses` touches, each rounded up to 16 bytes (the way
/// WebGPU counts them against `max_compute_workgroup_storage_size`).
fn workgroup_memory(module: &naga::Module, uses: &naga::valid::FunctionInfo) -> u64 {
    module
        .global_variables
        .iter()
        .filter(|(h, v)| v.space == naga::AddressSpace::WorkGroup && !uses[*h].is_empty())
        .map(|(_, v)| {
            u64::from(module.types[v.ty].inner.size(module.to_ctx()))
                .div_ceil(16)
                .saturating_mul(16)
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::binding::BindingKind;

    const SAXPY: &str = "
        struct P { a: f32, n: u32 }
        @group(0) @binding(0) var<uniform> p: P;
        @group(0) @binding(1) var<storage, read> x: array<f32>;
        @group(0) @binding(2) var<storage, read_write> y: array<f32>;
        @group(0) @binding(3) var<storage, read_write> unused: array<f32>;
        @compute @workgroup_size(64) fn main(@builtin(global_invocation_id) id: vec3<u32>) {
            if id.x < arrayLength(&y) { y[id.x] = p.a * x[id.x] + y[id.x]; }
        }";

    #[test]
    fn reflects_names_and_element_types_and_binds_by_name() {
        let src = "
            struct Row { w: vec4<f32>, id: u32 }
            struct Table { n: u32, rows: array<Row> }
            @group(0) @binding(0) var<storage, read> t: Table;
            @group(0) @binding(1) var<storage, read_write> v: array<vec2<i32>>;
            @group(0) @binding(2) var<uniform> m: mat4x4<f32>;
            @compute @workgroup_size(1) fn main() {
                v[0] = vec2<i32>(i32(t.n + t.rows[0].id) + i32(m[0][0]));
            }";
        let k = Kernel::compile(KernelSource::wgsl("t", src)).unwrap();
        let got: Vec<_> = (k.bindings().iter())
            .map(|b| (b.name.as_str(), b.element.as_str()))
            .collect();
        assert_eq!(
            got,
            [("t", "Row"), ("v", "vec2<i32>"), ("m", "mat4x4<f32>")]
        );
        assert_eq!(k.binding_number("v").unwrap(), 1);
        let err = k.binding_number("nope").unwrap_err().to_string();
        assert!(err.contains("`nope`") && err.contains("t, v, m"), "{err}");
    }

    #[test]
    fn reflects_bindings_and_workgroup_size() {
        let k = Kernel::compile(KernelSource::wgsl("saxpy", SAXPY)).unwrap();
        assert_eq!(k.workgroup_size(), [64, 1, 1]);
        let kinds: Vec<_> = k.bindings().iter().map(|b| (b.binding, b.kind)).collect();
        assert_eq!(
            kinds,
            [
                (0, BindingKind::Uniform),
                (1, BindingKind::StorageRead),
                (2, BindingKind::StorageReadWrite)
            ]
        );
        assert_eq!(k.bindings()[0].fixed_size, 8);
        assert_eq!(k.bindings()[1].stride, Some(4));
    }

    #[test]
    fn only_deep_nesting_is_refused_unparsed() {
        let chain = vec!["x"; 30_000].join(" + ");
        assert!(too_deep(&format!("let y = {chain};")).is_some());
        let brackets = "(".repeat(25_001);
        assert!(too_deep(&format!("let y = {brackets}1;")).is_some());
        // A table of 200,000 constants, negatives included, nests two deep.
        let table = vec!["-1.5"; 200_000].join(", ");
        assert_eq!(
            too_deep(&format!("const T = array<f32, 200000>({table});")),
            None
        );
        // Statements start afresh.
        let many = vec!["x = x + 1.0 - 2.0;"; 100_000].concat();
        assert_eq!(too_deep(&many), None);
    }

    #[test]
    fn invalid_wgsl_reports_line_and_column() {
        let err = Kernel::compile(KernelSource::wgsl("bad", "fn main( {")).unwrap_err();
        let Error::Shader { message, .. } = err else {
            panic!("{err:?}")
        };
        assert!(message.contains("1:"), "{message}");
    }

    #[test]
    fn missing_entry_point_is_a_shader_error() {
        let err = Kernel::compile(KernelSource::wgsl("s", SAXPY).entry_point("nope")).unwrap_err();
        assert!(
            matches!(&err, Error::Shader { message, .. } if message.contains("nope")),
            "{err}"
        );
    }

    #[test]
    fn size_rules() {
        let k = Kernel::compile(KernelSource::wgsl("saxpy", SAXPY)).unwrap();
        let x = k.binding(1).unwrap();
        assert!(x.check_size(0).is_err());
        assert!(x.check_size(6).is_err());
        assert!(x.check_size(8).is_ok());
        let p = k.binding(0).unwrap();
        assert!(p.check_size(4).is_err());
        assert!(p.check_size(8).is_ok());
    }
}
