//! A warm start: wgpu's pipeline cache kept in a directory the user names
//! ([`EngineBuilder::pipeline_cache_dir`](crate::EngineBuilder::pipeline_cache_dir)), so a
//! fresh process gets the driver's compiled pipelines back instead of compiling them again.
//!
//! # What keeps a stale blob out
//! - **The file name** is wgpu's key for the adapter ([`wgpu::util::pipeline_cache_key`]:
//!   backend, vendor and device id) plus a hash of the driver's name and version strings: a
//!   driver update looks for a different file and starts cold.
//! - **wgpu's header** inside the blob records the adapter key and the driver's pipeline-cache
//!   UUID (Vulkan changes it with every driver build); wgpu checks both and, with
//!   `fallback: true`, starts an empty cache when they differ.
//! - **Our frame** around the blob (a magic, the length and a 64-bit FNV-1a hash of the bytes)
//!   rejects a truncated or corrupted file, which wgpu's header alone would not notice.
//!
//! Files are written whole (to a temporary name, then renamed), after [`Engine::kernel`]
//! built new pipelines and at shutdown. Where the device lacks `Features::PIPELINE_CACHE`
//! (every backend but Vulkan in wgpu 30) nothing is read or written.
//!
//! [`Engine::kernel`]: crate::Engine::kernel

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::error::scoped;

/// The frame's magic: the file format's name and version.
const MAGIC: &[u8; 8] = b"WGBPC001";
/// Magic, length, hash.
const FRAME: usize = 8 + 8 + 8;

/// One device's pipeline cache and the file it lives in.
pub(crate) struct DiskCache {
    cache: wgpu::PipelineCache,
    path: PathBuf,
    /// The hash of the bytes last read or written, so an unchanged cache is not rewritten.
    saved: AtomicU64,
}

impl DiskCache {
    /// The cache for `device` (opened on an adapter described by `info`), loaded from `dir`
    /// when a valid file is there. `None` when the device cannot cache pipelines.
    pub(crate) fn open(
        dir: &Path,
        info: &wgpu::AdapterInfo,
        device: &wgpu::Device,
    ) -> Option<DiskCache> {
        if !device.features().contains(wgpu::Features::PIPELINE_CACHE) {
            return None;
        }
        let path = dir.join(file_name(info)?);
        let data = read_regular(&path).and_then(|f| match unframe(&f) {
            Some(data) => Some(data.to_vec()),
            None => {
                log::warn!("ignoring a damaged pipeline cache {}", path.display());
                None
            }
        });
        let saved = data.as_deref().map_or(0, fnv1a);
        let (cache, err) = scoped(device, || create(device, data.as_deref()));
        if let Some(e) = err {
            log::warn!("pipeline cache unavailable: {e}");
            return None;
        }
        log::debug!(
            "pipeline cache {} ({})",
            path.display(),
            if data.is_some() { "warm" } else { "cold" }
        );
        Some(DiskCache {
            cache,
            path,
            saved: AtomicU64::new(saved),
        })
    }

    /// The cache to build pipelines with.
    pub(crate) fn cache(&self) -> &wgpu::PipelineCache {
        &self.cache
    }

    /// Writes the cache to its file if it changed since it was read or last written. A
    /// failure is logged: the engine works the same without the file.
    pub(crate) fn save(&self) {
        let Some(data) = self.cache.get_data() else {
            return;
        };
        let hash = fnv1a(&data);
        if self.saved.swap(hash, Relaxed) == hash {
            return;
        }
        if let Err(e) = write_whole(&self.path, &frame(&data, hash)) {
            self.saved.store(0, Relaxed);
            log::warn!(
                "could not save the pipeline cache {}: {e}",
                self.path.display()
            );
        }
    }
}

/// Creates the cache from `data` (or empty); wgpu ignores data for another adapter or driver.
#[allow(unsafe_code)]
fn create(device: &wgpu::Device, data: Option<&[u8]>) -> wgpu::PipelineCache {
    let desc = wgpu::PipelineCacheDescriptor {
        label: Some("wgpu-batch pipeline cache"),
        data,
        fallback: true,
    };
    // SAFETY: wgpu requires `data` to be what `PipelineCache::get_data` returned for an
    // adapter with the same `pipeline_cache_key`. It is: we only read files this module wrote
    // (our magic) from `get_data`'s bytes, named by that key, unchanged (length and hash
    // checked by `unframe`). A file forged by someone who can write the directory is outside
    // what this can rule out (as wgpu documents); the builder's docs ask for a private one.
    unsafe { device.create_pipeline_cache(&desc) }
}

/// The cache file's name for an adapter: wgpu's key and a hash of the driver strings; `None`
/// for backends wgpu cannot cache for.
fn file_name(info: &wgpu::AdapterInfo) -> Option<String> {
    let key = wgpu::util::pipeline_cache_key(info)?;
    let driver = format!("{}\n{}", info.driver, info.driver_info);
    Some(format!("{key}_{:016x}.bin", fnv1a(driver.as_bytes())))
}

fn frame(data: &[u8], hash: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(FRAME + data.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(data.len() as u64).to_le_bytes());
    out.extend_from_slice(&hash.to_le_bytes());
    out.extend_from_slice(data);
    out
}

/// The blob inside a file, if the file is whole and ours.
fn unframe(file: &[u8]) -> Option<&[u8]> {
    let (head, data) = file.split_at_checked(FRAME)?;
    let word = |i: usize| u64::from_le_bytes(head[i..i + 8].try_into().unwrap_or([0; 8]));
    let whole = &head[..8] == MAGIC && word(8) == data.len() as u64 && word(16) == fnv1a(data);
    whole.then_some(data)
}

/// The largest cache file read; a larger one is ignored (a cache is megabytes, not more).
const MAX_FILE: u64 = 256 << 20;

/// The contents of `path` if it is a regular file of at most [`MAX_FILE`] bytes. Whatever
/// else sits under the name (a named pipe, a device, a directory) is ignored without
/// blocking: the file is checked before it is opened, opened without waiting for a writer,
/// and checked again through the handle (the name may have changed in between).
fn read_regular(path: &Path) -> Option<Vec<u8>> {
    use std::io::Read;
    let regular = |m: std::fs::Metadata| m.is_file() && m.len() <= MAX_FILE;
    if !std::fs::metadata(path).is_ok_and(regular) {
        if path.exists() {
            log::warn!(
                "ignoring {}: not a regular file of at most {MAX_FILE} bytes",
                path.display()
            );
        }
        return None;
    }
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::custom_flags(&mut options, libc::O_NONBLOCK);
    let file = options.open(path).ok()?;
    if !file.metadata().is_ok_and(regular) {
        return None;
    }
    let mut data = Vec::new();
    file.take(MAX_FILE).read_to_end(&mut data).ok()?;
    Some(data)
}

/// Writes `bytes` to a temporary file beside `path` and renames it over `path`, so a reader
/// (another process starting) sees the old file or the new one, never half of one. The
/// temporary file is created anew (whatever had its name is removed first), so a named pipe
/// left there cannot block the write.
fn write_whole(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)?
        .write_all(bytes)?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// 64-bit FNV-1a: enough to notice damage (not an adversary).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_damage_is_rejected() {
        let data = b"pipeline bytes".to_vec();
        let file = frame(&data, fnv1a(&data));
        assert_eq!(unframe(&file), Some(&data[..]));
        assert_eq!(unframe(&file[..file.len() - 1]), None, "truncated");
        let mut flipped = file.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert_eq!(unframe(&flipped), None, "corrupted");
        assert_eq!(unframe(&file[..5]), None, "shorter than the frame");
        let mut longer = file;
        longer.push(0);
        assert_eq!(unframe(&longer), None, "extended");
    }

    #[test]
    fn a_driver_update_changes_the_file_name() {
        let mut info = wgpu::AdapterInfo::new(wgpu::DeviceType::DiscreteGpu, wgpu::Backend::Vulkan);
        (info.vendor, info.device) = (1, 2);
        info.driver_info = "1.0".into();
        let before = file_name(&info).unwrap();
        info.driver_info = "1.1".into();
        assert_ne!(before, file_name(&info).unwrap());
        info.backend = wgpu::Backend::Gl;
        assert_eq!(file_name(&info), None, "wgpu caches Vulkan pipelines only");
    }
}
