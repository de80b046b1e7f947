#!/usr/bin/env bash
# Builds the llama-cpp-python wheel once per (version, build flags) into a cache folder outside the checkout,
# and prints that folder. Why: PyPI ships only sources (a ~5 min compile), pip's own wheel cache ignores
# CMAKE_ARGS, and a default native build crashes (SIGILL, AMX path) on quantized models on these machines.
set -euo pipefail
VERSION="${LLAMA_CPP_VERSION:-0.3.36}"
PY="${PYTHON:-python3}"
flags="-DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF"
# Keep AVX-512 where the CPU has it (about 40 % faster embeddings than the portable AVX2 build).
if grep -qw avx512f /proc/cpuinfo 2>/dev/null; then
  for f in avx512vbmi:AVX512_VBMI avx512_vnni:AVX512_VNNI avx512_bf16:AVX512_BF16 avx_vnni:AVX_VNNI; do
    grep -qw "${f%%:*}" /proc/cpuinfo && flags="$flags -DGGML_${f#*:}=ON"
  done
  flags="$flags -DGGML_AVX512=ON"
fi
key=$(printf '%s %s' "$VERSION" "$flags" | sha256sum | cut -c1-12)
dir="${XDG_CACHE_HOME:-$HOME/.cache}/corral/wheels/llama-cpp-python-$VERSION-$key"
if ! ls "$dir"/llama_cpp_python-"$VERSION"-*.whl >/dev/null 2>&1; then
  mkdir -p "$dir.tmp"
  echo "building llama-cpp-python $VERSION with: $flags (a few minutes, once)" >&2
  CMAKE_ARGS="$flags" CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
    "$PY" -m pip wheel --no-deps --no-cache-dir -w "$dir.tmp" "llama-cpp-python==$VERSION" >&2
  rm -rf "$dir" && mv "$dir.tmp" "$dir"
fi
echo "$dir"
