"""Sum CubeCL's kernel profile by kernel: where a wgpu run spends its GPU time.

Run glint with CubeCL's profiler writing to a file, then summarise it:

    CUBECL_DEBUG_LOG=/tmp/cubecl.log CUBECL_DEBUG_OPTION=profile \
        glint bench --model M --image I --device wgpu --runs 1
    python3 benches/cubecl_profile.py /tmp/cubecl.log [--top 25]

The log holds one line per launched kernel (`| 972.8µs | FullKernel_61ec16bc`) and one block per
compiled kernel. The profiler waits for each kernel, so the sum is GPU time without overlap, and
the warm-up run is included: compare kernels, not the total with `glint bench`'s.
"""

import argparse
import collections
import re

UNITS = {"ns": 1e-9, "µs": 1e-6, "us": 1e-6, "ms": 1e-3, "s": 1.0}
LAUNCH = re.compile(r"^\| ([0-9.]+)(ns|µs|us|ms|s)\s+\| (\S.*?)\s*$")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("log")
    p.add_argument("--top", type=int, default=25)
    args = p.parse_args()
    seconds, launches = collections.Counter(), collections.Counter()
    compiled = 0
    with open(args.log, encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.startswith("[START_KERNEL_COMPILATION]"):
                compiled += 1
                continue
            m = LAUNCH.match(line)
            if not m:
                continue
            # Drop the hash suffix so every specialisation of a kernel adds up together.
            name = m.group(3).rsplit("_", 1)[0].split(" | ")[0]
            seconds[name] += float(m.group(1)) * UNITS[m.group(2)]
            launches[name] += 1
    total = sum(seconds.values())
    print(f"{sum(launches.values())} launches, {compiled} kernels compiled, {total * 1e3:.1f} ms of kernel time")
    print(f"{'ms':>10} {'share':>6} {'launches':>9}  kernel")
    for name, s in seconds.most_common(args.top):
        print(f"{s * 1e3:>10.1f} {s / total:>6.1%} {launches[name]:>9}  {name}")


if __name__ == "__main__":
    main()
