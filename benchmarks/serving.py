"""The served model over HTTP, measured: accuracy on the 10,000 test images against
metrics/test.json, single-image latency (p50, p99), and images/s in batches of 256.

    make serve &    # the champion, on 127.0.0.1:5002
    python -m benchmarks.serving --url http://127.0.0.1:5002 [--requests 500]

Requests go one at a time from this process over loopback, as raw 0-255 pixels.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import urllib.request

import torch

from mnistcnn.data import mnist
from mnistcnn.outputs import read_json
from mnistcnn.params import config


def post(url: str, images: torch.Tensor) -> list[dict]:
    body = json.dumps({"inputs": images.tolist()}).encode()
    request = urllib.request.Request(f"{url}/invocations", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as answer:
        return json.load(answer)["predictions"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:5002")
    parser.add_argument("--requests", type=int, default=500, help="single-image requests to time")
    args = parser.parse_args()
    paths = config.load().paths
    data = mnist.load_split(paths.test_data, "test", read_json(paths.provenance, produced_by="download"), paths.provenance)
    images, labels = data["test_images"], data["test_labels"]

    started, digits = time.perf_counter(), []
    for i in range(0, len(images), 256):
        digits += [p["digit"] for p in post(args.url, images[i : i + 256])]
    batch_seconds = time.perf_counter() - started
    accuracy = (torch.tensor(digits) == labels).double().mean().item()

    latencies = []
    for i in range(args.requests):
        one = time.perf_counter()
        post(args.url, images[i : i + 1])
        latencies.append((time.perf_counter() - one) * 1000)
    cuts = statistics.quantiles(latencies, n=100)
    expected = read_json(paths.test_metrics, produced_by="evaluate")["accuracy"]
    print(json.dumps({"accuracy_over_http": accuracy, "metrics_test_json": expected, "equal": accuracy == expected,
                      "images_per_second_batch_256": round(len(images) / batch_seconds, 1),
                      "single_image_ms_p50": round(cuts[49], 2), "single_image_ms_p99": round(cuts[98], 2),
                      "single_image_requests": args.requests}, indent=2))


if __name__ == "__main__":
    main()
