#!/usr/bin/env python3
"""ChromaDB's side of the peers benchmark (benches/harness/peers.rs).

Reads the vectors, queries and exact answers the harness wrote into --data, loads the vectors
into an embedded, persistent ChromaDB collection (cosine, the same HNSW settings as ours),
then times the same queries and prints one JSON object: insert rate, search p50/p99 and
recall@10, the same with a metadata filter keeping every second key, the process's resident
memory growth and the bytes on disk.
"""

import argparse
import json
import os
import time

import chromadb
import numpy as np


def rss_bytes():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def dir_bytes(path):
    return sum(os.path.getsize(os.path.join(root, f)) for root, _, files in os.walk(path) for f in files)


def quantile(values, q):
    """The nearest-rank quantile, as the harness takes it (ovs_port_agent::metrics::median_p99)."""
    ordered = sorted(values)
    return ordered[round((len(ordered) - 1) * q)]


def timed_queries(collection, queries, truth, k, where=None):
    latencies, hits = [], 0
    for query, expected in zip(queries, truth):
        started = time.perf_counter()
        result = collection.query(query_embeddings=[query], n_results=k, where=where, include=["distances"])
        latencies.append((time.perf_counter() - started) * 1000.0)
        hits += len(set(int(i) for i in result["ids"][0]) & set(expected))
    return quantile(latencies, 0.5), quantile(latencies, 0.99), hits / max(1, sum(len(t) for t in truth))


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", required=True, help="directory with vectors.f32, queries.f32, truth.json")
    parser.add_argument("--dim", type=int, required=True)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--ef-search", type=int, default=128)
    args = parser.parse_args()

    vectors = np.fromfile(os.path.join(args.data, "vectors.f32"), dtype="<f4").reshape(-1, args.dim)
    queries = np.fromfile(os.path.join(args.data, "queries.f32"), dtype="<f4").reshape(-1, args.dim)
    with open(os.path.join(args.data, "truth.json")) as f:
        truth = json.load(f)
    store = os.path.join(args.data, "chroma")

    before = rss_bytes()
    client = chromadb.PersistentClient(path=store, settings=chromadb.Settings(anonymized_telemetry=False))
    collection = client.create_collection(
        "events",
        embedding_function=None,
        configuration={"hnsw": {"space": "cosine", "ef_construction": 100, "max_neighbors": 16, "ef_search": args.ef_search}},
    )
    batch = client.get_max_batch_size()
    started = time.perf_counter()
    for start in range(0, len(vectors), batch):
        end = min(start + batch, len(vectors))
        keys = range(start + 1, end + 1)
        collection.add(
            ids=[str(key) for key in keys],
            embeddings=vectors[start:end],
            metadatas=[{"even": key % 2 == 0} for key in keys],
        )
    insert_s = time.perf_counter() - started

    started = time.perf_counter()
    collection.query(query_embeddings=[queries[0]], n_results=args.k, include=["distances"])
    first_query_ms = (time.perf_counter() - started) * 1000.0
    p50, p99_ms, recall = timed_queries(collection, queries, truth["all"], args.k)
    filtered_p50, _, filtered_recall = timed_queries(collection, queries, truth["even"], args.k, where={"even": True})
    print(
        json.dumps(
            {
                "version": chromadb.__version__,
                "insert_per_s": len(vectors) / insert_s,
                "first_query_ms": first_query_ms,
                "p50_ms": p50,
                "p99_ms": p99_ms,
                "recall": recall,
                "filtered_p50_ms": filtered_p50,
                "filtered_recall": filtered_recall,
                "rss_bytes": rss_bytes() - before,
                "disk_bytes": dir_bytes(store),
            }
        )
    )


if __name__ == "__main__":
    main()
