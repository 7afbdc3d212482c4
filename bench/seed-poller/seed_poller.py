#!/usr/bin/env python3
# Vendored unmodified from shared/peers/seed-poller/seed_poller.py: the Python yardstick that
# `ccm bench sync --peer seed-poller` runs side by side with ccm. Only this comment was added;
# the logic is the original's. Do not optimise it: it is the baseline.
"""Reference peer: the CML polling design described in the resilience analysis, in Python.

It syncs a fleet of CML instances the way the seed system does, with the Phase 1 and
Phase 2 enhancements switched on:
  * one httpx.AsyncClient per request, 15 s timeout, TLS verification off;
  * bearer token from POST /api/v0/authenticate, re-authenticated once on 401;
  * tenacity retry: 3 attempts, exponential wait 1..10 s, only on connect errors and timeouts;
  * aiobreaker circuit breaker per endpoint: open after 5 failures, reset after 60 s;
  * graceful degradation: system_information, system_health, system_stats and licensing are
    each tried on their own, and the worker is READY, DEGRADED or UNAVAILABLE from what answered;
  * an asyncio.Semaphore bounds how many workers sync at once (10 by default, as in the seed).

It is a yardstick for benchmarks, not part of the product. Usage:
  python3 seed_poller.py --endpoints FILE [--concurrency 10] [--cycles 1] [--user admin --password admin]
FILE holds one CML base URL per line (for example http://127.0.0.2:9443). One JSON line per
cycle is printed: workers, seconds, ready/degraded/unavailable counts, HTTP requests sent.
"""
import argparse
import asyncio
import json
import logging
import time
from datetime import timedelta

import httpx
from aiobreaker import CircuitBreaker, CircuitBreakerError
from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_exponential

log = logging.getLogger("seed_poller")
REQUESTS = 0


class IntegrationError(Exception):
    pass


class CmlClient:
    def __init__(self, base_url, username, password, breaker, timeout=15.0, verify_ssl=False):
        self.base_url = base_url.rstrip("/")
        self.username, self.password = username, password
        self.breaker, self.timeout, self.verify_ssl = breaker, timeout, verify_ssl
        self._token = None

    @retry(
        stop=stop_after_attempt(3),
        wait=wait_exponential(multiplier=1, min=1, max=10),
        retry=retry_if_exception_type((httpx.ConnectError, httpx.TimeoutException)),
        reraise=True,
    )
    async def _request(self, method, url, **kwargs):
        global REQUESTS
        REQUESTS += 1
        async with httpx.AsyncClient(verify=self.verify_ssl, timeout=self.timeout) as client:
            return await client.request(method, url, **kwargs)

    async def _get_token(self):
        if self._token is None:
            response = await self._request(
                "POST",
                f"{self.base_url}/api/v0/authenticate",
                json={"username": self.username, "password": self.password},
            )
            if response.status_code != 200:
                raise IntegrationError(f"authentication failed: HTTP {response.status_code}")
            self._token = response.json()
        return self._token

    async def _get(self, path, auth=True):
        url = f"{self.base_url}/api/v0/{path}"
        try:
            headers = {"Authorization": f"Bearer {await self._get_token()}"} if auth else {}
            response = await self._request("GET", url, headers=headers)
            if auth and response.status_code == 401:
                self._token = None
                headers = {"Authorization": f"Bearer {await self._get_token()}"}
                response = await self._request("GET", url, headers=headers)
            if response.status_code == 404:
                return None
            if response.status_code != 200:
                raise IntegrationError(f"{path}: HTTP {response.status_code}")
            return response.json()
        except httpx.ConnectError as e:
            raise IntegrationError(f"cannot connect to {self.base_url}: {e}") from e
        except httpx.TimeoutException as e:
            raise IntegrationError(f"timed out on {self.base_url}: {e}") from e

    async def get(self, path, auth=True):
        try:
            return await self.breaker.call_async(self._get, path, auth)
        except CircuitBreakerError:
            return None


async def sync_worker(client):
    """Graceful degradation: every endpoint is tried on its own; partial results are kept."""
    answered = {}
    for path, auth in (("system_information", False), ("system_health", True),
                       ("system_stats", True), ("licensing", True)):
        try:
            answered[path] = await client.get(path, auth)
        except (IntegrationError, ValueError) as e:
            log.warning("%s %s: %s", client.base_url, path, e)
            answered[path] = None
    if not any(v is not None for v in answered.values()):
        return "UNAVAILABLE"
    info = answered["system_information"]
    return "READY" if info and info.get("ready") else "DEGRADED"


async def run(args):
    endpoints = [line.strip() for line in open(args.endpoints) if line.strip()]
    breakers = {url: CircuitBreaker(fail_max=5, timeout_duration=timedelta(seconds=60)) for url in endpoints}
    clients = [CmlClient(url, args.user, args.password, breakers[url], timeout=args.timeout) for url in endpoints]
    gate = asyncio.Semaphore(args.concurrency)

    async def bounded(client):
        async with gate:
            return await sync_worker(client)

    for cycle in range(args.cycles):
        global REQUESTS
        REQUESTS = 0
        started = time.perf_counter()
        statuses = await asyncio.gather(*(bounded(c) for c in clients))
        elapsed = time.perf_counter() - started
        print(json.dumps({
            "peer": "seed-poller", "cycle": cycle + 1, "workers": len(clients),
            "concurrency": args.concurrency, "seconds": round(elapsed, 3),
            "ready": statuses.count("READY"), "degraded": statuses.count("DEGRADED"),
            "unavailable": statuses.count("UNAVAILABLE"), "requests": REQUESTS,
        }), flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--endpoints", required=True, help="file with one CML base URL per line")
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--cycles", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=15.0)
    parser.add_argument("--user", default="admin")
    parser.add_argument("--password", default="admin")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
