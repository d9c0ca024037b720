//! The GPU request path must not copy activations to the host between layers, nor fall back to
//! the CPU: only the final logits of the rows that need them and the pooled rows come back.
//! A source check (no GPU here to count copies): the device-side files contain no
//! device-to-host copy or CPU device at all, and the runner copies exactly twice per step.

const DEVICE_SIDE: [&str; 3] = ["src/gpu/model.rs", "src/gpu/cuda.rs", "src/gpu/step.rs"];
/// Anything that moves tensor data to the host or names the CPU device.
const HOST_COPIES: [&str; 9] = ["to_vec0", "to_vec1", "to_vec2", "to_vec3", "to_scalar", "to_device(", "clone_dtoh", "memcpy_dtoh", "Device::Cpu"];

fn read(path: &str) -> String {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Code without `//` comments (doc comments may name what they forbid).
fn code(src: &str) -> String {
    src.lines().map(|l| l.split("//").next().unwrap_or("")).collect::<Vec<_>>().join("\n")
}

#[test]
fn device_side_code_never_copies_to_the_host() {
    for f in DEVICE_SIDE {
        let c = code(&read(f));
        for pat in HOST_COPIES {
            // step.rs matches on the device kind to decide whether to upload: that is allowed.
            if f.ends_with("step.rs") && pat == "Device::Cpu" {
                continue;
            }
            assert!(!c.contains(pat), "{f} contains `{pat}`: a device-to-host copy (or a CPU fallback) in the GPU path");
        }
    }
}

#[test]
fn runner_copies_only_logits_and_pooled_rows() {
    let c = code(&read("src/gpu/runner.rs"));
    let copies: Vec<&str> = c.lines().filter(|l| HOST_COPIES.iter().any(|p| l.contains(p))).collect();
    assert_eq!(copies.len(), 2, "expected two host copies (logits, pooled rows), found: {copies:#?}");
    assert!(copies[0].contains("flatten_all()?.to_vec1::<f32>()") && c.contains("self.model.logits(&hidden.narrow(0, 0, plan.want.len())?)"), "first copy must be the wanted rows' logits");
    assert!(copies[1].contains("hidden.narrow(0, plan.want.len(), plan.pool_rows.len())"), "second copy must be the pooled rows");
}
