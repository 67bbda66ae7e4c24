# Every recipe a user or CI needs. `./dev RECIPE` installs `just` first when it is missing.

set shell := ["bash", "-euo", "pipefail", "-c"]

export CARGO_TERM_COLOR := "never"

import 'cross/cross.just'
import 'compress/compress.just'

# List the recipes.
default:
    @just --list

# Install what builds and tests need: Debian packages, Python tools, Rust components. Idempotent.
setup:
    #!/usr/bin/env bash
    set -euo pipefail
    pkgs=(libclang-dev curl systemd mosquitto mosquitto-clients openssl podman runc)
    missing=()
    for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
    if [ ${#missing[@]} -gt 0 ]; then
      apt-get update -qq
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
    fi
    pip=(python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore)
    "${pip[@]}" -r <(grep -v '^rapidocr-onnxruntime==' requirements-dev.txt)
    "${pip[@]}" --no-deps "$(grep '^rapidocr-onnxruntime==' requirements-dev.txt)"
    rustup component add rustfmt clippy >/dev/null

# Fetch the reference models and photos into models/cache (checksums verified).
fetch *NAMES:
    models/fetch.sh {{NAMES}}

# Write the reference fixtures (OpenCV, onnxruntime) the tests compare against.
fixtures: fetch
    python3 tests/reference/detectors.py target/fixtures/detectors
    python3 tests/reference/dbnet.py target/fixtures/dbnet
    python3 tests/reference/classify.py target/fixtures/classify
    python3 compress/scripts/make_images.py target/fixtures/compress
    python3 tests/reference/ultralytics_seg.py target/fixtures/seg
    python3 tests/reference/opencv_geom.py target/fixtures/geom
    python3 tests/reference/opencv_morph.py target/fixtures
    python3 tests/reference/gridsample.py target/fixtures/gridsample

# The demo: YOLOX-Nano and YuNet over the reference photos; annotated PNGs in out/demo.
demo: setup (fetch "yolox_nano.onnx" "yunet_n_320_320.onnx" "images/astronaut.png" "images/chelsea.png" "images/coffee.png" "images/camera.png" "images/page.png" "images/text.png" "images/rocket.jpg")
    cargo run -p ocelli --quiet -- run board-configs/host-demo.toml
    @echo "annotated images: out/demo/"

# The cascade demo: PP-OCRv4 det, then PP-OCR's orientation classifier on each text line.
demo-cascade: setup (fetch "ch_PP-OCRv4_det_infer.onnx" "ch_ppocr_mobile_v2.0_cls_infer.onnx" "images/page.png")
    cargo run -p ocelli --quiet -- run board-configs/host-cascade.toml
    @echo "annotated image: out/cascade/page.png"

# Three devices updated over MQTT from a local mosquitto: a good bundle, a bad one, a slow one.
fleet-demo: setup (fetch "ultraface_version-slim-320.onnx" "ultraface_version-RFB-320.onnx" "yolov8n.onnx" "images/astronaut.png" "images/chelsea.png" "images/coffee.png" "images/camera.png" "images/page.png" "images/text.png" "images/rocket.jpg")
    cargo build -p ocelli -p ocelli-compress --quiet
    python3 tests/fleet_demo.py "${CARGO_TARGET_DIR:-target}/debug/ocelli" "${CARGO_TARGET_DIR:-target}/debug/ocelli-compress"

# docs/snapshot.png: annotated snapshots (tracking, a zone) of three demo photos, tiled.
snapshot: (fetch "yolox_nano.onnx" "yunet_n_320_320.onnx" "images/astronaut.png" "images/chelsea.png" "images/coffee.png" "images/camera.png" "images/page.png" "images/text.png" "images/rocket.jpg")
    rm -rf out/snapshots
    cargo run -p ocelli --quiet -- run docs/snapshot.toml
    python3 docs/snapshot.py out/snapshots docs/snapshot.png

# The whole test suite, as CI runs it: host, aarch64 under qemu-user, its package, its container, the emulated boards.
test: test-host (test-arm "aarch64-unknown-linux-gnu") (test-package "arm64") test-container qemu-camera qemu-systemd
    @{{ just_executable() }} isa-skips

# The instruction-set paths the last host and qemu-user test runs skipped (the CPU lacked them), with their count.
isa-skips *LOGS="host aarch64-unknown-linux-gnu":
    #!/usr/bin/env bash
    set -euo pipefail
    logs=()
    for name in {{ LOGS }}; do logs+=("${CARGO_TARGET_DIR:-target}/test-logs/$name.log"); done
    awk '/^ISA path skipped: / { f = FILENAME; sub(".*/", "", f); sub("[.]log$", "", f) }
      /^ISA path skipped: / && !seen[f $0]++ { print f ": " $0; n++ }
      END { print n + 0 " ISA paths skipped (not run on these CPUs)" }' "${logs[@]}"

# The host suite: formatting, lints, every workspace test, the deployment manifests.
test-host: setup fixtures
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings
    mkdir -p "${CARGO_TARGET_DIR:-target}/test-logs"
    cargo test --workspace 2>&1 | tee "${CARGO_TARGET_DIR:-target}/test-logs/host.log"
    tests/deploy.sh
    python3 tests/fleet_demo.py "${CARGO_TARGET_DIR:-target}/debug/ocelli" "${CARGO_TARGET_DIR:-target}/debug/ocelli-compress"
    @{{ just_executable() }} isa-skips host

# Criterion benchmarks (release builds) and the side-by-side reference timings.
bench:
    cargo bench -p ocelli

# Instance segmentation: mask postprocessing next to inference, at 320 and 640 (docs/perf.md).
bench-seg: fixtures
    cargo bench -p ocelli --bench seg

# Debian packages for arm64 and armhf from the release binaries (target/dist).
package: dist
    packaging/build-deb.sh arm64 target/dist/ocelli-aarch64-unknown-linux-gnu
    packaging/build-deb.sh armhf target/dist/ocelli-armv7-unknown-linux-gnueabihf

# The arm64 image of packaging/Dockerfile, built and run with podman: detections on the socket volume, SIGTERM.
test-container: setup (fetch "yolox_nano.onnx" "images/astronaut.png") (cross "aarch64-unknown-linux-gnu")
    tests/container.sh

# The packages install, upgrade (keeping an edited config) and purge cleanly.
test-package *ARCHS="arm64 armhf":
    #!/usr/bin/env bash
    set -euo pipefail
    for arch in {{ ARCHS }}; do
      case $arch in
        arm64) target=aarch64-unknown-linux-gnu ;;
        armhf) target=armv7-unknown-linux-gnueabihf ;;
        *) echo "test-package: $arch is not arm64 or armhf" >&2; exit 2 ;;
      esac
      {{ just_executable() }} cross "$target"
      tests/package.sh "$arch" "target/dist/ocelli-$target"
    done

# Fuzz one target of fuzz/fuzz_targets for SECONDS (nightly, cargo-fuzz); crashes land in fuzz/artifacts.
fuzz TARGET SECONDS="600":
    #!/usr/bin/env bash
    set -euo pipefail
    rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
    command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz
    [ -d fuzz/corpus/{{TARGET}} ] || python3 fuzz/seeds.py
    # Sanitizer flags differ from the normal build's: keep the artifacts apart.
    nice -n 19 cargo +nightly fuzz run -O --target-dir "${CARGO_TARGET_DIR:-$PWD/target}/fuzz" {{TARGET}} \
      -- -max_total_time={{SECONDS}} -timeout=10 -rss_limit_mb=2048 -print_final_stats=1

# Peak RSS per board preset (README's board table), then the 20000x20000 PNG refused: time and RSS.
memory: fetch
    cargo build -p ocelli
    nice python3 benches/memory/measure.py "${CARGO_TARGET_DIR:-target}/debug/ocelli"
    nice python3 benches/memory/measure.py "${CARGO_TARGET_DIR:-target}/debug/ocelli" --bomb

# Soak benchmark: FRAMES synthetic frames through the release binary; docs/soak.csv and docs/soak.png.
soak FRAMES="200000":
    cargo build --release -p ocelli
    nice python3 benches/soak/soak.py "${CARGO_TARGET_DIR:-target}/release/ocelli" --frames {{FRAMES}}
