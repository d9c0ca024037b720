//! With the `cuda` feature, compile every `cuda/*.cu` to PTX (`$OUT_DIR/<name>.ptx`) with nvcc
//! for `sm_$CUDA_COMPUTE_CAP` (default 90: H100/H200; the build never probes a GPU). nvcc is
//! `$NVCC`, else `$CUDA_HOME/bin/nvcc`, else the one on PATH. Without the feature it does nothing.
use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=CUDA_COMPUTE_CAP");
    println!("cargo:rerun-if-env-changed=NVCC");
    println!("cargo:rerun-if-env-changed=CUDA_HOME");
    if std::env::var_os("CARGO_FEATURE_CUDA").is_none() {
        return;
    }
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    let cap = std::env::var("CUDA_COMPUTE_CAP").unwrap_or_else(|_| "90".into());
    let nvcc = std::env::var("NVCC").ok().or_else(|| std::env::var("CUDA_HOME").ok().map(|h| format!("{h}/bin/nvcc"))).unwrap_or_else(|| "nvcc".into());
    let mut sources: Vec<PathBuf> = std::fs::read_dir("cuda").expect("kernels/cuda").filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.extension().is_some_and(|x| x == "cu")).collect();
    sources.sort();
    for src in sources {
        println!("cargo:rerun-if-changed={}", src.display());
        let name = src.file_stem().and_then(|s| s.to_str()).expect("utf-8 file name");
        let status = Command::new(&nvcc)
            .args(["--ptx", "-O3", "-std=c++17", &format!("-arch=sm_{cap}"), "-o"])
            .arg(out.join(format!("{name}.ptx")))
            .arg(&src)
            .status()
            .unwrap_or_else(|e| panic!("running {nvcc}: {e} (set NVCC or CUDA_HOME; see ../shared/guides/cuda-build.md)"));
        assert!(status.success(), "nvcc failed on {}", src.display());
    }
}
