"""Load generator for the ingest acceptance tests (run as a subprocess so
its threads and memory stay out of the measurements of the test process).

    python ingest_load.py ADDRESS --streams N --bytes B --mode push|stall --out R.json

push: N concurrent Ingest streams, each one tensor of B random bytes into
its own run load/rK (created first), in 1 MiB chunks; a stream refused with
RESOURCE_EXHAUSTED is retried (up to 20 times, 0.2 s apart).
stall: N streams that send a BeginTensor declaring B bytes, then nothing
until the server ends them.

Writes {"ends": [[code, details, seconds_after_all_started], ...],
"retries": n, "crc32c": {run: crc}} to R.json; grpc.aio keeps all streams
on one thread.
"""
import argparse
import asyncio
import json
import time

import grpc
import numpy as np
from reprod_client.client import _PB as pb
from reprod_client.crc32c import crc32c

CHUNK = 1 << 20
METHOD = "/reprod.v1.IngestService/Ingest"


def begin(run, nbytes, crc):
    address = pb.tensor.TensorAddress(checkpoint="ck", key="x")
    header = pb.tensor.TensorHeader(address=address, dtype=pb.tensor.DTYPE_UINT8,
                                    shape=[nbytes], byte_length=nbytes, crc32c=crc)
    return pb.ingest.IngestRequest(begin=pb.ingest.BeginTensor(run=run, tensor_id=1,
                                                               header=header))


async def requests(run, data, stall, nbytes):
    if stall is not None:
        yield begin(run, nbytes, 0)
        await stall.wait()
        return
    yield begin(run, len(data), crc32c(data))
    for off in range(0, len(data), CHUNK):
        yield pb.ingest.IngestRequest(chunk=pb.tensor.TensorChunk(
            offset=off, data=data[off:off + CHUNK]))


async def one_stream(channel, run, data, stall, nbytes, started, ends, retries):
    call_of = channel.stream_stream(
        METHOD, request_serializer=pb.ingest.IngestRequest.SerializeToString,
        response_deserializer=pb.ingest.IngestResponse.FromString)
    for attempt in range(20):
        try:
            async for _ in call_of(requests(run, data, stall, nbytes)):
                pass
            ends.append(["OK", "", time.monotonic() - started[0]])
            return
        except grpc.aio.AioRpcError as e:
            if e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and stall is None and attempt < 19:
                retries[0] += 1
                await asyncio.sleep(0.2)
                continue
            ends.append([e.code().name, e.details(), time.monotonic() - started[0]])
            return
        except asyncio.CancelledError:
            ends.append(["CANCELLED", "", time.monotonic() - started[0]])
            return


async def main(args):
    channels = [grpc.aio.insecure_channel(args.address) for _ in range(max(1, args.streams // 100))]
    stall = asyncio.Event() if args.mode == "stall" else None
    rng = np.random.default_rng(7)
    payloads, crcs = {}, {}
    if stall is None:
        for k in range(args.streams):
            data = rng.integers(0, 256, args.bytes, dtype=np.uint8).tobytes()
            payloads[k] = data
            crcs[f"{args.prefix}/r{k}"] = crc32c(data)
    ends, retries, started = [], [0], [time.monotonic()]
    tasks = [one_stream(channels[k % len(channels)], f"{args.prefix}/r{k}", payloads.get(k), stall,
                        args.bytes, started, ends, retries) for k in range(args.streams)]
    await asyncio.gather(*tasks)
    for c in channels:
        await c.close()
    with open(args.out, "w") as f:
        json.dump({"ends": ends, "retries": retries[0], "crc32c": crcs}, f)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("address")
    parser.add_argument("--streams", type=int, required=True)
    parser.add_argument("--bytes", type=int, required=True)
    parser.add_argument("--mode", choices=["push", "stall"], required=True)
    parser.add_argument("--prefix", default="load")
    parser.add_argument("--out", required=True)
    asyncio.run(main(parser.parse_args()))
