//! The overhead of the policy stack on a successful call, without I/O.
//!
//! `cargo bench -p ccm-resilience --bench policy_stack`
//!
//! Each sample runs a batch of calls inside one `block_on` on a current-thread runtime, so the
//! runtime's entry cost is not counted. `raw` awaits the operation directly; the others go
//! through `Resilience::call`. The overhead is a row's time minus `raw`.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use ccm_resilience::{Call, Classify, ErrorClass, NoopObserver, Resilience, ResilienceConfig};
use criterion::{Criterion, criterion_group, criterion_main};
use tokio::runtime::Runtime;
use tokio::time::Instant;

#[derive(Debug)]
struct BenchError;

impl Classify for BenchError {
    fn class(&self) -> ErrorClass {
        ErrorClass::Transient
    }
}

async fn op(attempt: u32) -> Result<u64, BenchError> {
    Ok(black_box(u64::from(attempt)))
}

/// Defaults, but a rate limit that never makes the benchmark wait.
fn full_config() -> ResilienceConfig {
    let mut cfg = ResilienceConfig::default();
    cfg.rate_limit.per_second = 1_000_000_000;
    cfg.rate_limit.burst = 1_000_000_000;
    cfg
}

fn run_batch(
    rt: &Runtime,
    r: &Resilience,
    keys: &[String],
    call: Call<'static>,
    iters: u64,
) -> Duration {
    rt.block_on(async {
        let start = Instant::now();
        for i in 0..iters {
            let key = &keys[(i as usize) % keys.len()];
            let call = Call { key, ..call };
            black_box(r.call(&call, op).await.unwrap());
        }
        start.elapsed()
    })
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let one_key = vec!["https://10.0.0.1".to_owned()];
    let many_keys: Vec<String> = (0..10_000)
        .map(|i| format!("https://10.0.{}.{}", i / 256, i % 256))
        .collect();
    let full = Resilience::new(&full_config(), Arc::new(NoopObserver));
    let disabled = Resilience::disabled();
    let plain = Call::new("");
    let everything = Call::new("")
        .bulkhead(ccm_resilience::bulkhead::CML_POLL)
        .rate_limit("eu-west-1");

    let mut g = c.benchmark_group("policy_stack");
    g.bench_function("raw", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for i in 0..iters {
                    black_box(op(i as u32).await.unwrap());
                }
                start.elapsed()
            })
        });
    });
    g.bench_function("disabled", |b| {
        b.iter_custom(|iters| run_batch(&rt, &disabled, &one_key, plain, iters));
    });
    g.bench_function("timeout_retry_budget_breaker", |b| {
        b.iter_custom(|iters| run_batch(&rt, &full, &one_key, plain, iters));
    });
    g.bench_function("full_stack", |b| {
        b.iter_custom(|iters| run_batch(&rt, &full, &one_key, everything, iters));
    });
    g.bench_function("full_stack_10k_keys", |b| {
        b.iter_custom(|iters| run_batch(&rt, &full, &many_keys, everything, iters));
    });
    g.bench_function("full_stack_10k_keys_prometheus", |b| {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        b.iter_custom(|iters| {
            metrics::with_local_recorder(&recorder, || {
                run_batch(&rt, &full, &many_keys, everything, iters)
            })
        });
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
