"""The machine's f32 matrix-multiply rate at the benchmark's thread count: the compute bound
that prefill and large-batch decode are measured against.

Times torch.mm of two N×N float32 matrices (oneDNN/MKL, the best f32 GEMM on hand, near the
CPU's FMA peak) --passes times and prints {"threads", "n", "best_gflop_s", "median_gflop_s"}.
Integer dot-product paths (int8 activations × quantised weights) can run above this figure:
it is the f32 peak, not the int8 one.
"""

import argparse
import json
import statistics
import sys
import time


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--n", type=int, default=2048)
    parser.add_argument("--passes", type=int, default=8)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    a = torch.randn(args.n, args.n, generator=g)
    b = torch.randn(args.n, args.n, generator=g)
    torch.mm(a, b)  # warm-up: first call picks kernels and allocates
    rates = []
    for _ in range(args.passes):
        start = time.perf_counter()
        torch.mm(a, b)
        rates.append(2 * args.n**3 / (time.perf_counter() - start) / 1e9)
    print(json.dumps({"threads": args.threads, "n": args.n, "best_gflop_s": round(max(rates), 1),
                      "median_gflop_s": round(statistics.median(rates), 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
