//! The `tracing` feature: a job's span from submit to reply, a child of the caller's span, a
//! batch's span with its life's events, and the events of a device's loss and reopening, as
//! a subscriber sees them.

use std::io::Write;
use std::sync::{Arc, Mutex};

use tracing_subscriber::fmt::format::FmtSpan;
use wgpu_batch::{Engine, kernels, wgpu};

/// Where the subscriber writes: shared with the test, which reads it afterwards.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn jobs_and_batches_have_spans() {
    let captured = Captured::default();
    let writer = captured.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_span_events(FmtSpan::CLOSE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .init();
    let engine = Engine::builder()
        .backends(wgpu::Backends::VULKAN)
        .build()
        .expect("an engine (needs lavapipe: apt install mesa-vulkan-drivers)");
    let saxpy = engine.kernel(kernels::saxpy()).expect("kernel");
    let request = tracing::info_span!("request", id = 7);
    let handles: Vec<_> = request.in_scope(|| {
        (0..8)
            .map(|i| {
                let y = vec![i as f32; 256];
                engine.submit(kernels::saxpy_job(&saxpy, 2.0, &[1.0; 256], &y))
            })
            .collect()
    });
    for h in handles {
        h.expect("submit").wait().expect("job");
    }
    engine.shutdown(); // every batch span closed
    let text = String::from_utf8(captured.0.lock().unwrap().clone()).expect("utf-8");
    let lines: Vec<&str> = text.lines().collect();
    let has = |parts: &[&str]| lines.iter().any(|l| parts.iter().all(|p| l.contains(p)));
    // A job's span is a child of the caller's, with its device, size, batch and outcome.
    assert!(
        has(&[
            "request{id=7}:wgpu_batch.job{device=0 steps=1 bytes=",
            "encoded"
        ]),
        "{text}"
    );
    assert!(
        has(&["wgpu_batch.job{", "outcome=\"ok\"", "replied"]),
        "{text}"
    );
    assert!(has(&["wgpu_batch.job{", "batch=", "close"]), "{text}");
    // A batch's span: formed, encoded, submitted, completed, with jobs, bytes and dispatches.
    for event in ["formed", "encoded", "submitted", "completed"] {
        assert!(
            has(&["wgpu_batch.batch{device=0 batch=", "jobs=", event]),
            "no batch event {event} in\n{text}"
        );
    }
    assert!(
        has(&["wgpu_batch.batch{", "bytes=", "dispatches=", "close"]),
        "{text}"
    );
    let replied = lines.iter().filter(|l| l.contains("replied")).count();
    assert_eq!(replied, 8, "one reply per job:\n{text}");

    // A loss and a reopening are events.
    let engine = Engine::builder()
        .backends(wgpu::Backends::VULKAN)
        .reopen_lost_devices(true)
        .reopen_backoff(std::time::Duration::ZERO)
        .build()
        .expect("an engine");
    engine.lose_device(0);
    let text = || String::from_utf8(captured.0.lock().unwrap().clone()).expect("utf-8");
    let has = |parts: &[&str]| text().lines().any(|l| parts.iter().all(|p| l.contains(p)));
    let reopened = [
        "WARN",
        "device reopened",
        "device=0",
        "generation=1",
        "micros=",
    ];
    let start = std::time::Instant::now();
    while !has(&reopened) {
        assert!(
            start.elapsed().as_secs() < 60,
            "no reopening event in\n{}",
            text()
        );
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    assert!(
        has(&["WARN", "device lost", "device=0", "reason="]),
        "{}",
        text()
    );
}
