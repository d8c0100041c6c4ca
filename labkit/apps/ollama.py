"""Ollama: its chart, then proved with the official client through Traefik: the configured models
pulled (a pull cut off is pulled again), and a benchmark of each (tokens/s from Ollama's own
counters, latency as the client saw it)."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import httpx
import ollama
import pandas as pd
from kubernetes import client

from labkit import certs, charts, net
from labkit.apps.base import AppError, https_client, image_parts, settings
from labkit.changes import Check
from labkit.params import Lab
from labkit.progress import progress


def ollama_chart(lab: Lab) -> charts.Chart:
    app = settings(lab).ollama
    repository, tag = image_parts(app)
    values = {"image": {"repository": repository, "tag": tag},
              "resources": {"requests": dict(app.requests), "limits": dict(app.limits)},
              "persistentVolume": {"enabled": True, "storageClass": app.storage.storage_class, "size": app.storage.size}}
    return charts.Chart("ollama", chart="ollama", version=app.chart.version, repo=app.chart.repo,
                        target_namespace=settings(lab).namespace, values=values)


def ollama_client(api: client.ApiClient, lab: Lab) -> ollama.Client:
    """The official client, at https://ollama.<domain> through Traefik."""
    settings_ = https_client(net.traefik_address(api), settings(lab).ollama.host, certs.issuer_ca(lab), timeout=600)
    return ollama.Client(host=settings_.pop("base_url"), **settings_)


def pull(ollama_: ollama.Client, model: str, *, attempts: int = 4, pause: float = 2.0) -> str:
    """Pull a model with a progress line per layer and status; an unknown model raises AppError
    with Ollama's own error. A pull cut off (the connection dropped, Ollama or Traefik restarting:
    refused, or 502-504 from Traefik) is pulled again after ``pause`` seconds, doubled at each
    cut (2 + 4 + 8 s ride out a pod being replaced), Ollama resuming the layers it has, up to
    ``attempts`` times, each cut named in the progress line."""
    with progress(f"pull {model}") as bar:
        for attempt in range(1, attempts + 1):
            try:
                for update in ollama_.pull(model, stream=True):
                    tenths = (update.completed or 0) * 10 // update.total if update.total else None
                    bar.update(note=update.status + (f" {tenths * 10}%" if tenths is not None else ""))
                return model
            except ollama.ResponseError as exc:
                if exc.status_code not in (502, 503, 504):
                    raise AppError(f"Ollama could not pull {model}: {exc.error}; fix apps.ollama.models in the lab "
                                   "file (name:tag as https://ollama.com/library lists it)") from None
                cut = f"HTTP {exc.status_code} from Traefik"
            except (httpx.TransportError, ConnectionError) as exc:
                cut = str(exc) or type(exc).__name__
            if attempt < attempts:
                bar.update(note=f"cut off ({cut}); pulling again in {pause:g} s, Ollama resumes")
                time.sleep(pause)
                pause *= 2
    raise AppError(f"Ollama's pull of {model} was cut off {attempts} times (last: {cut}); "
                   "see the ollama pod's log and restart count")


def benchmark(ollama_: ollama.Client, models: list[str], prompt: str, repetitions: int) -> pd.DataFrame:
    """``repetitions`` non-streamed generations per model, then one streamed chat: tokens/s from
    Ollama's own eval_count and eval_duration, latency as the client saw it. A model that cannot
    run (too large for the pod's memory limit...) gets one row with Ollama's error."""
    rows = []
    with progress("benchmark", total=len(models) * (repetitions + 1)) as bar:
        for model in models:
            for run in range(repetitions):
                started = time.monotonic()
                try:
                    answer = ollama_.generate(model=model, prompt=prompt, stream=False)
                except ollama.ResponseError as exc:
                    rows.append({"model": model, "run": run, "mode": "generate", "error": exc.error})
                    break
                rows.append(_row(model, run, "generate", answer, time.monotonic() - started))
                bar.update(len(rows), f"{model}: {rows[-1]['tokens_per_s']:.1f} tokens/s")
            else:
                started = time.monotonic()
                chunks = list(ollama_.chat(model=model, messages=[{"role": "user", "content": prompt}], stream=True))
                rows.append(_row(model, repetitions, "chat (streamed)", chunks[-1], time.monotonic() - started,
                                 text="".join(c.message.content or "" for c in chunks)))
                bar.update(len(rows), f"{model}: streamed chat in {len(chunks)} chunks")
    return pd.DataFrame(rows, columns=["model", "run", "mode", "tokens", "tokens_per_s", "latency_s", "load_s",
                                       "answer", "error"])


def _row(model: str, run: int, mode: str, answer, latency: float, text: str | None = None) -> dict:
    tokens, seconds = answer.eval_count or 0, (answer.eval_duration or 0) / 1e9
    return {"model": model, "run": run, "mode": mode, "tokens": tokens,
            "tokens_per_s": tokens / seconds if seconds else 0.0, "latency_s": latency,
            "load_s": (answer.load_duration or 0) / 1e9,
            "answer": (text if text is not None else answer.response or "")[:80], "error": ""}


def benchmark_summary(runs: pd.DataFrame) -> pd.DataFrame:
    """Per model: mean tokens/s and latency p50/p95 over its runs (errors: the error)."""
    rows = []
    for model, mine in runs.groupby("model", sort=False):
        ok = mine[mine["error"].fillna("") == ""]
        latencies = sorted(ok["latency_s"])
        rows.append({"model": model, "runs": len(ok), "tokens_per_s": ok["tokens_per_s"].mean() if len(ok) else 0.0,
                     "latency_p50_s": statistics.median(latencies) if latencies else None,
                     "latency_p95_s": _percentile(latencies, 95) if latencies else None,
                     "error": "; ".join(e for e in mine["error"].fillna("") if e)})
    return pd.DataFrame(rows, columns=["model", "runs", "tokens_per_s", "latency_p50_s", "latency_p95_s", "error"])


def _percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile (a few runs: no interpolation that invents values)."""
    return values[min(len(values) - 1, max(0, -(-len(values) * pct // 100) - 1))]


@dataclass(frozen=True)
class OllamaResult:
    version: str
    models: pd.DataFrame  # /api/tags after the pulls
    runs: pd.DataFrame
    summary: pd.DataFrame
    wanted: tuple[str, ...] = ()
    skipped: bool = False

    def checks(self) -> list[Check]:
        if self.skipped:
            return []
        wanted = self.wanted
        have = set(self.models["model"])
        failed = self.summary[self.summary["error"] != ""]
        return [Check("Ollama answers the official client", bool(self.version), f"version {self.version}"),
                Check("configured models pulled", set(wanted) <= have, ", ".join(sorted(have)) or "none"),
                Check("every model generates (streamed and not)", failed.empty and len(self.summary) == len(wanted),
                      "; ".join(f"{m}: {e}" for m, e in zip(failed["model"], failed["error"], strict=True))
                      or ", ".join(f"{m} {t:.1f} tokens/s" for m, t in zip(self.summary["model"],
                                                                         self.summary["tokens_per_s"], strict=True)))]


def verify_ollama(api: client.ApiClient, lab: Lab, *, dry_run: bool = False) -> OllamaResult:
    """Pull the configured models, then benchmark them (a dry run, or Ollama disabled: nothing)."""
    app = settings(lab).enabled().get("ollama")
    if dry_run or app is None:
        empty = benchmark_summary(pd.DataFrame(columns=["model", "error"]))
        return OllamaResult("", pd.DataFrame(columns=["model", "size_mib", "parameters"]), empty, empty, skipped=True)
    with ollama_client(api, lab) as ollama_:
        for model in app.models:
            pull(ollama_, model)
        version = ollama_._client.get("/api/version").json().get("version", "")
        tags = pd.DataFrame([{"model": m.model, "size_mib": (m.size or 0) / 2**20,
                              "parameters": m.details.parameter_size if m.details else ""}
                             for m in ollama_.list().models], columns=["model", "size_mib", "parameters"])
        runs = benchmark(ollama_, list(app.models), app.benchmark.prompt, app.benchmark.repetitions)
    return OllamaResult(version, tags, runs, benchmark_summary(runs), tuple(app.models))
