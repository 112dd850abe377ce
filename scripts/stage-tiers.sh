#!/usr/bin/env bash
# Packs what the lower-tier benchmarks need on the H100 test machine, which has no Debian packages
# and no network, into .gpu-tiers.tgz (ignored by git; carry it in a device call):
#   bin/  disk_bench and redis_bench (from BUILD_DIR, default build/), fio built from the Debian
#         source package with only the libc engines (io_uring included; no libaio, ceph or rdma,
#         which would need dozens of libraries there), redis-server, redis-cli and redis-benchmark
#         (the Debian binaries)
#   lib/  the libraries those Redis binaries load that Ubuntu 24.04 may lack (jemalloc, lzf, ...)
# scripts/gpu-tiers.sh unpacks it and runs the benchmarks.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${BUILD_DIR:-build}
for t in disk_bench redis_bench; do
  [[ -x $build/bench/${t%_bench}/$t ]] || cmake --build "$build" --target "$t"
done
fio_dir=/tmp/tierkv-fio-src
if [[ ! -x $fio_dir/fio/fio ]]; then
  rm -rf "$fio_dir" && mkdir -p "$fio_dir/lists/partial"
  sed 's/^Types: deb$/Types: deb-src/' /etc/apt/sources.list.d/debian.sources >"$fio_dir/src.sources"
  apt=(-o Dir::Etc::SourceList="$fio_dir/src.sources" -o Dir::Etc::SourceParts=/dev/null
       -o Dir::State::Lists="$fio_dir/lists")
  apt-get "${apt[@]}" update -qq
  (cd "$fio_dir" && apt-get "${apt[@]}" source --download-only fio >/dev/null 2>&1)
  mkdir -p "$fio_dir/fio"
  tar xzf "$fio_dir"/fio_*.orig.tar.gz -C "$fio_dir/fio" --strip-components=1
  (cd "$fio_dir/fio" && ./configure --disable-numa --disable-rdma --disable-gfapi --disable-rados \
     --disable-rbd --disable-http --disable-pmem --disable-native >/dev/null &&
   make -j"$(nproc)" fio >/dev/null)
fi
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/.gpu-tiers/bin" "$stage/.gpu-tiers/lib"
cp "$build/bench/disk/disk_bench" "$build/bench/redis/redis_bench" "$fio_dir/fio/fio" \
   "$(command -v redis-server)" "$(command -v redis-cli)" "$(command -v redis-benchmark)" \
   "$stage/.gpu-tiers/bin/"
strip --strip-unneeded "$stage/.gpu-tiers/bin/disk_bench" "$stage/.gpu-tiers/bin/redis_bench" \
  "$stage/.gpu-tiers/bin/fio"
# Every library the Redis binaries load, but the C and C++ runtimes, which the target has.
for b in redis-server redis-cli redis-benchmark; do ldd "$(command -v $b)"; done |
  awk '$3 ~ /^\// {print $3}' | sort -u |
  grep -Ev '/(libc|libm|libstdc\+\+|libgcc_s|ld-linux-x86-64)\.so' |
  xargs -r cp -L -t "$stage/.gpu-tiers/lib/"
tar czf .gpu-tiers.tgz -C "$stage" .gpu-tiers
du -sh .gpu-tiers.tgz
