# Every recipe a user or CI needs. `./dev RECIPE` installs `just` first when it is missing.

set shell := ["bash", "-euo", "pipefail", "-c"]

export CARGO_TERM_COLOR := "never"

# List the recipes.
default:
    @just --list

# Install what builds and tests need: Debian packages, Python tools, Rust components. Idempotent.
setup:
    #!/usr/bin/env bash
    set -euo pipefail
    pkgs=(libclang-dev curl)
    missing=()
    for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
    if [ ${#missing[@]} -gt 0 ]; then
      apt-get update -qq
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
    fi
    python3 -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
    rustup component add rustfmt clippy >/dev/null

# Fetch the reference models and photos into models/cache (checksums verified).
fetch *NAMES:
    models/fetch.sh {{NAMES}}

# Write the reference fixtures (OpenCV, onnxruntime) the tests compare against.
fixtures: fetch
    python3 tests/reference/detectors.py target/fixtures/detectors
    python3 tests/reference/opencv_geom.py target/fixtures/geom

# The demo: YOLOX-Nano and YuNet over the reference photos; annotated PNGs in out/demo.
demo: setup (fetch "yolox_nano.onnx" "yunet_n_320_320.onnx" "images/astronaut.png" "images/chelsea.png" "images/coffee.png" "images/camera.png" "images/page.png" "images/text.png" "images/rocket.jpg")
    cargo run -p ocelli --quiet -- run board-configs/host-demo.toml
    @echo "annotated images: out/demo/"

# The whole test suite, as CI runs it.
test: setup fixtures
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings
    cargo test --workspace
    for c in board-configs/*.toml; do cargo run -p ocelli --quiet -- check-config "$c"; done

# Criterion benchmarks (release builds) and the side-by-side reference timings.
bench:
    cargo bench -p ocelli
