//! Compile `../cuda/*.cu`, unmodified, for the host: each through its launcher in `cpp/`, with
//! the SIMT shim's stand-in CUDA headers (`include/`) first on the include path.
//! `HHH_SIMT_TSAN=1` builds them with ThreadSanitizer (scripts/check-cuda.sh runs the tests so).
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=include");
    println!("cargo:rerun-if-changed=cpp");
    println!("cargo:rerun-if-changed=../cuda");
    println!("cargo:rerun-if-env-changed=HHH_SIMT_TSAN");
    let tsan = std::env::var("HHH_SIMT_TSAN").is_ok_and(|v| v == "1");
    let mut b = cc::Build::new();
    b.cpp(true).std("c++20").include("include").flag("-pthread").flag("-Wno-unknown-pragmas").warnings(true).extra_warnings(false).opt_level(2);
    for f in ["cpp/reshape_and_cache.cpp", "cpp/paged_attention.cpp", "cpp/paged_prefill.cpp"] {
        b.file(f);
    }
    if tsan {
        b.flag("-fsanitize=thread").flag("-g");
        println!("cargo:rustc-link-lib=dylib=tsan");
    }
    b.compile("hhh_simt_kernels");
    println!("cargo:rustc-link-lib=dylib=stdc++");
}
