#!/bin/sh
# rustc wrapper for the workspace's crates in ARM builds (cross/config.toml): links the `ocelli`
# executable with fat LTO, as the release profile does, and everything else as the `arm` profile
# says (no LTO).
#
# Why not `cargo rustc --bin ocelli -- -C lto=fat`: without test targets, cargo resolves the
# dependencies' features without the dev-dependencies (smallvec, num-rational, serde_json differ),
# and tract is compiled a second time. With the wrapper the binary is built by the same cargo
# invocation as the tests, from the same dependency build.
rustc=$1
shift
case " $* " in
  *" --crate-name ocelli "*" --crate-type bin "*)
    exec "$rustc" "$@" -C lto=fat -C codegen-units=1 ;;
esac
exec "$rustc" "$@"
