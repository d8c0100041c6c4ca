"""Ollama (image ``ollama/ollama``) as an app model: Ollama 0.12's HTTP API on the pod IP, port
11434 (``OLLAMA_HOST`` may name another), with a small catalogue of real models instead of the
registry and canned, deterministic answers instead of inference.

- ``/api/pull`` streams Ollama's progress (``pulling manifest``, ``pulling <digest[7:19]>`` with
  ``digest``/``total``/``completed`` per layer, ``verifying sha256 digest``, ``writing manifest``,
  ``success``) at ``PULL_BYTES_PER_SECOND``, and writes the model as Ollama lays it out in
  ``$OLLAMA_MODELS`` (default /root/.ollama/models, the chart's volume): a manifest per model and
  the blobs, the model weights as *sparse* files of the real size (the disk shows the size, holds
  no data). The digests are the twin's own (sha256 of the model's name and layer), not the
  registry's. A name not in ``CATALOGUE`` fails as Ollama does: ``pull model manifest: file does
  not exist``.
- ``/api/generate`` and ``/api/chat`` (NDJSON streamed, or one object with ``"stream": false``)
  load the model first: it needs ``required_bytes`` (weights + 15 % + 512 MiB for the context and
  compute graph); with less than that in the container's memory limit (cgroup v2
  ``/sys/fs/cgroup/memory.max``, as Ollama reads it, else /proc/meminfo) the request fails with
  Ollama's ``model requires more system memory (X GiB) than is available (Y GiB)``. Loading
  takes ``size / LOAD_BYTES_PER_SECOND``; it is reported as ``load_duration`` on the first request
  and the model stays loaded for ``keep_alive`` (5 minutes; ``/api/ps`` lists it).
- Speed: CPU inference is memory-bandwidth bound, each token reads all the weights once, so
  ``eval tokens/s = min(cores, 8) * BYTES_PER_SECOND_PER_CORE / model size`` with ``cores`` the
  container's CPU limit (cgroup ``cpu.max``) or its node's cores (/proc/cpuinfo), and the prompt
  evaluated ``PROMPT_SPEEDUP`` times faster (batched). Four cores give ~15 tokens/s for
  llama3.2:1b and ~4 for llama3.1:8b, as measured on such CPUs.
- Time: pulls, loads and answers are paced on the lab's clock (``serve.pace``), like every other
  modelled duration: at time scale 1 a client's wall-clock latency agrees with the durations
  reported (ns, as Ollama's); at time scale 0 they come at once. ``eval_duration``,
  ``prompt_eval_duration`` and ``load_duration`` are the modelled ones (the rates they give are the
  formula's, whatever the machine's load); ``total_duration`` is those plus the time the model
  really spent beyond its pacing.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from aiohttp import web

from labsim.apps import serve

VERSION = "0.12.10"
GIB, MIB = 1 << 30, 1 << 20
PULL_BYTES_PER_SECOND = 1_000_000_000
LOAD_BYTES_PER_SECOND = 2_000_000_000
BYTES_PER_SECOND_PER_CORE = 5_000_000_000
PROMPT_SPEEDUP = 10
KEEP_ALIVE_SECONDS = 300
REGISTRY = "registry.ollama.ai"


@dataclass(frozen=True)
class Model:
    size: int  # bytes of the weights (the registry's GGUF)
    family: str
    parameter_size: str
    quantization: str
    parameter_count: int
    context_length: int


_LLAMA32_1B = Model(1_321_082_688, "llama", "1.2B", "Q8_0", 1_235_814_432, 131072)
_LLAMA32_3B = Model(2_019_377_376, "llama", "3.2B", "Q4_K_M", 3_212_749_888, 131072)
_LLAMA31_8B = Model(4_920_738_944, "llama", "8.0B", "Q4_K_M", 8_030_261_248, 131072)
_QWEN25_05B = Model(397_807_936, "qwen2", "494.03M", "Q4_K_M", 494_032_768, 32768)
_QWEN25_15B = Model(986_046_272, "qwen2", "1.5B", "Q4_K_M", 1_543_714_304, 32768)
CATALOGUE = {"llama3.2:1b": _LLAMA32_1B, "llama3.2:3b": _LLAMA32_3B, "llama3.2:latest": _LLAMA32_3B,
             "llama3.1:8b": _LLAMA31_8B, "llama3.1:latest": _LLAMA31_8B,
             "qwen2.5:0.5b": _QWEN25_05B, "qwen2.5:1.5b": _QWEN25_15B}
_SMALL_LAYERS = {"template": 1_429, "license": 7_711, "params": 96}
_ANSWER = ("The short answer is that it depends on the details, so here is a careful walk through them. "
           "First, look at what the question assumes and check each assumption against what is known. "
           "Second, weigh the likely explanations and keep the simplest one that fits the evidence. "
           "Finally, test that explanation with a small experiment before relying on it.")


def full_name(name: str) -> str:
    """``llama3.2`` -> ``llama3.2:latest``; the registry's host and ``library/`` are dropped."""
    name = name.strip().removeprefix(f"{REGISTRY}/").removeprefix("library/")
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"


def required_bytes(model: Model) -> int:
    return int(model.size * 1.15) + 512 * MIB


def human_bytes(count: int) -> str:
    """Ollama's format.HumanBytes2."""
    for unit, size in (("GiB", GIB), ("MiB", MIB), ("KiB", 1024)):
        if count >= size:
            return f"{count / size:.1f} {unit}"
    return f"{count} B"


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def _digest(*parts: str) -> str:
    return "sha256:" + hashlib.sha256(":".join(parts).encode()).hexdigest()


class Container:
    """What the model knows of its container: limits and node (cgroup files, /proc), its folder."""

    def __init__(self, root: Path, env: dict[str, str]) -> None:
        self.root = root
        self.models_path = env.get("OLLAMA_MODELS", f"{env.get('HOME', '/root')}/.ollama/models")  # the container's
        self.models = root / self.models_path.lstrip("/")

    def _read(self, path: str) -> str:
        try:
            return (self.root / path.lstrip("/")).read_text()
        except OSError:
            return ""

    def memory(self) -> int:
        limit = self._read("/sys/fs/cgroup/memory.max").strip()
        if limit.isdigit():
            return int(limit)
        for line in self._read("/proc/meminfo").splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")

    def cores(self) -> float:
        node = self._read("/proc/cpuinfo").count("processor") or os.cpu_count() or 1
        quota, _, period = self._read("/sys/fs/cgroup/cpu.max").strip().partition(" ")
        return min(node, int(quota) / int(period)) if quota.isdigit() and period.isdigit() else node


class Store:
    """Models on disk, laid out as Ollama does: manifests/<registry>/library/<model>/<tag>, blobs/sha256-<hex>."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def manifest_path(self, name: str) -> Path:
        model, tag = full_name(name).rsplit(":", 1)
        namespace = model if "/" in model else f"library/{model}"
        return self.folder / "manifests" / REGISTRY / namespace / tag

    def manifest(self, name: str) -> dict | None:
        try:
            return json.loads(self.manifest_path(name).read_text())
        except (OSError, ValueError):
            return None

    def blob(self, digest: str) -> Path:
        return self.folder / "blobs" / digest.replace(":", "-")

    def names(self) -> list[str]:
        root = self.folder / "manifests" / REGISTRY
        found = [p.relative_to(root) for p in root.glob("*/*/*") if p.is_file()] if root.is_dir() else []
        return sorted(f"{p.parent.name if p.parts[0] == 'library' else p.parent}:{p.name}" for p in found)

    def delete(self, name: str) -> bool:
        manifest, path = self.manifest(name), self.manifest_path(name)
        if manifest is None:
            return False
        path.unlink()
        used = {layer["digest"] for other in self.names() for layer in (self.manifest(other) or {}).get("layers", [])}
        for layer in [*manifest.get("layers", []), manifest.get("config", {})]:
            if layer.get("digest") and layer["digest"] not in used:
                self.blob(layer["digest"]).unlink(missing_ok=True)
        return True


def layers_of(name: str, model: Model) -> list[dict]:
    """The manifest's layers: the weights and the small files Ollama's library models carry."""
    family = full_name(name).split(":")[0]
    layers = [{"mediaType": "application/vnd.ollama.image.model", "digest": _digest(family, model.quantization,
                                                                                      str(model.size)),
               "size": model.size}]
    layers += [{"mediaType": f"application/vnd.ollama.image.{kind}", "digest": _digest(family, kind), "size": size}
               for kind, size in _SMALL_LAYERS.items()]
    return layers


def details(model: Model) -> dict:
    return {"parent_model": "", "format": "gguf", "family": model.family, "families": [model.family],
            "parameter_size": model.parameter_size, "quantization_level": model.quantization}


class Ollama:
    def __init__(self, container: Container) -> None:
        self.container, self.store = container, Store(container.models)
        self.loaded: dict[str, float] = {}  # model -> when it expires (monotonic)

    def model(self, name: str) -> Model | None:
        """A model present on disk (its catalogue entry), else None."""
        return CATALOGUE.get(full_name(name)) if self.store.manifest(name) is not None else None

    # -- pull ----------------------------------------------------------------------------------
    async def pull(self, name: str):
        yield {"status": "pulling manifest"}
        model = CATALOGUE.get(full_name(name))
        if model is None:
            yield {"error": "pull model manifest: file does not exist"}
            return
        layers = layers_of(name, model)
        for layer in layers:
            async for progress in self._download(layer):
                yield progress
        yield {"status": "verifying sha256 digest"}
        yield {"status": "writing manifest"}
        config = {"mediaType": "application/vnd.docker.container.image.v1+json",
                  "digest": _digest(full_name(name), "config"), "size": 487}
        self.store.blob(config["digest"]).write_text(json.dumps(
            {"model_format": "gguf", "model_family": model.family, "model_type": model.parameter_size,
             "file_type": model.quantization}))
        path = self.store.manifest_path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"schemaVersion": 2,
                                    "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                                    "config": config, "layers": layers}))
        yield {"status": "success"}

    async def _download(self, layer: dict):
        digest, total = layer["digest"], layer["size"]
        status = f"pulling {digest[7:19]}"
        blob = self.store.blob(digest)
        blob.parent.mkdir(parents=True, exist_ok=True)
        done = blob.stat().st_size if blob.exists() else 0  # a pull resumes where it stopped
        yield {"status": status, "digest": digest, "total": total, **({"completed": done} if done else {})}
        step = PULL_BYTES_PER_SECOND // 10
        with blob.open("ab") as out:
            while done < total:
                await serve.pace(min(step, total - done) / PULL_BYTES_PER_SECOND)
                done = min(total, done + step)
                out.truncate(done)  # sparse: the size without the data
                yield {"status": status, "digest": digest, "total": total, "completed": done}

    # -- load and generate ------------------------------------------------------------------------
    async def load(self, name: str, model: Model, keep_alive: float) -> int:
        """Load the model (evicting others), returning the load time in ns; raises MemoryError
        with Ollama's message when it does not fit."""
        now = time.monotonic()
        self.loaded = {k: t for k, t in self.loaded.items() if t > now}
        took = 0
        if full_name(name) not in self.loaded:
            available, required = self.container.memory(), required_bytes(model)
            if required > available:
                raise MemoryError(f"model requires more system memory ({human_bytes(required)}) "
                                  f"than is available ({human_bytes(available)})")
            self.loaded.clear()
            took = int(model.size / LOAD_BYTES_PER_SECOND * 1e9)
            await serve.pace(took / 1e9)
        self.loaded[full_name(name)] = time.monotonic() + keep_alive
        return took

    def speed(self, model: Model) -> float:
        """Tokens per second of evaluation (the module's formula)."""
        return min(self.container.cores(), 8) * BYTES_PER_SECOND_PER_CORE / model.size

    def ps(self) -> list[dict]:
        now, found = time.monotonic(), []
        for name, expires in self.loaded.items():
            model = CATALOGUE[name]
            if expires > now:
                when = datetime.now(UTC) + timedelta(seconds=expires - now)
                found.append({"name": name, "model": name, "size": required_bytes(model),
                              "digest": self._manifest_digest(name), "details": details(model),
                              "expires_at": when.isoformat().replace("+00:00", "Z"), "size_vram": 0,
                              "context_length": 4096})
        return found

    def _manifest_digest(self, name: str) -> str:
        try:
            return hashlib.sha256(self.store.manifest_path(name).read_bytes()).hexdigest()
        except OSError:
            return ""

    def tags(self) -> list[dict]:
        found = []
        for name in self.store.names():
            manifest, path = self.store.manifest(name) or {}, self.store.manifest_path(name)
            model = CATALOGUE.get(name)
            found.append({"name": name, "model": name,
                          "modified_at": datetime.fromtimestamp(path.stat().st_mtime, UTC).isoformat(),
                          "size": sum(layer["size"] for layer in manifest.get("layers", [])),
                          "digest": self._manifest_digest(name), "details": details(model) if model else {}})
        return found

    def show(self, name: str, model: Model) -> dict:
        weights = self.store.manifest(name)["layers"][0]["digest"]  # type: ignore[index]
        arch = model.family
        return {"license": "LLAMA 3.2 COMMUNITY LICENSE AGREEMENT" if arch == "llama" else "Apache License 2.0",
                "modelfile": f"# Modelfile generated by \"ollama show\"\nFROM "
                             f"{self.container.models_path}/blobs/{weights.replace(':', '-')}\n",
                "parameters": 'stop                           "<|eot_id|>"',
                "template": "{{ .Prompt }}", "details": details(model),
                "model_info": {"general.architecture": arch, "general.parameter_count": model.parameter_count,
                               f"{arch}.context_length": model.context_length},
                "capabilities": ["completion", "tools"],
                "modified_at": datetime.fromtimestamp(self.store.manifest_path(name).stat().st_mtime, UTC).isoformat()}


def answer(prompt: str, limit: int | None) -> list[str]:
    """The deterministic answer to a prompt, as the chunks (tokens) it is streamed in."""
    words = prompt.split()
    opening = f"You asked about {' '.join(words[:6]).rstrip('?.!')}." if words else "Hello."
    count = 24 + int(hashlib.sha256(prompt.encode()).hexdigest(), 16) % 24
    tokens = [*opening.split(), *(_ANSWER.split() * 2)][:count]
    if limit is not None and limit >= 0:
        tokens = tokens[:limit]
    return [token if i == 0 else f" {token}" for i, token in enumerate(tokens)]


def _keep_alive(value) -> float:
    """keep_alive: seconds, or a Go duration ("5m", "1h", "30s"); negative: forever."""
    if value is None:
        return KEEP_ALIVE_SECONDS
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        units = {"s": 1, "m": 60, "h": 3600}
        text = str(value).strip()
        seconds = float(text[:-1]) * units[text[-1]] if text and text[-1] in units else float(text or 0)
    return math.inf if seconds < 0 else seconds


async def _body(request: web.Request) -> dict:
    try:
        return await request.json()
    except ValueError:
        raise web.HTTPBadRequest(text=json.dumps({"error": "missing request body"}),
                                 content_type="application/json") from None


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


async def _respond(request: web.Request, body: dict, chunks) -> web.StreamResponse:
    """Ollama's streamResponse (NDJSON) or, with ``"stream": false``, the last object (an error: 500)."""
    if body.get("stream", True) is False:
        last: dict = {}
        async for item in chunks:
            last = item
            if "error" in item:
                return _error(500, item["error"])
        return web.json_response(last)
    response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
    await response.prepare(request)
    async for item in chunks:
        await response.write(json.dumps(item).encode() + b"\n")
    await response.write_eof()
    return response


def make_app(options) -> web.Application:
    _port(options)
    ollama = Ollama(Container(Path.cwd(), dict(os.environ)))
    app = web.Application()

    async def generate(request: web.Request, chat: bool) -> web.StreamResponse:
        body = await _body(request)
        name = body.get("model", "")
        model = ollama.model(name)
        if model is None:
            return _error(404, f"model '{name}' not found")
        try:
            load = await ollama.load(name, model, _keep_alive(body.get("keep_alive")))
        except MemoryError as exc:
            return _error(500, str(exc))
        messages = body.get("messages") or []
        prompt = (messages[-1].get("content", "") if messages else "") if chat else body.get("prompt", "")
        context = " ".join(m.get("content", "") for m in messages) if chat else prompt
        chunks = answer(prompt, (body.get("options") or {}).get("num_predict"))
        rate = ollama.speed(model)
        prompt_tokens = 26 + math.ceil(len(context) / 4)
        return await _respond(request, body, _tokens(full_name(name), chat, chunks, rate, prompt_tokens, load,
                                                     streamed=body.get("stream", True) is not False))

    async def _tokens(name, chat, chunks, rate, prompt_tokens, load, streamed):
        start = time.monotonic_ns()
        prompt_ns, eval_ns = int(prompt_tokens / (rate * PROMPT_SPEEDUP) * 1e9), int(len(chunks) / rate * 1e9)
        await serve.pace(prompt_ns / 1e9)
        for chunk in chunks:
            await serve.pace(1 / rate)
            if streamed:
                yield _reply(name, chat, chunk, done=False)
        final = _reply(name, chat, "" if streamed else "".join(chunks), done=True)
        # The modelled durations (what the pacing aimed at), so the rates reported are the formula's.
        overhead = max(0, time.monotonic_ns() - start - int((prompt_ns + eval_ns) * serve.time_scale()))
        final.update({"done_reason": "stop", "total_duration": load + prompt_ns + eval_ns + overhead,
                      "load_duration": load, "prompt_eval_count": prompt_tokens, "prompt_eval_duration": prompt_ns,
                      "eval_count": len(chunks), "eval_duration": eval_ns})
        if not chat:
            final["context"] = list(range(1, prompt_tokens + len(chunks) + 1))
        yield final

    async def pull(request: web.Request) -> web.StreamResponse:
        body = await _body(request)
        return await _respond(request, body, ollama.pull(body.get("model") or body.get("name", "")))

    async def show(request: web.Request) -> web.Response:
        body = await _body(request)
        name = body.get("model") or body.get("name", "")
        model = ollama.model(name)
        if model is None:
            return _error(404, f"model '{name}' not found")
        return web.json_response(ollama.show(name, model))

    async def delete(request: web.Request) -> web.Response:
        body = await _body(request)
        name = body.get("model") or body.get("name", "")
        if not ollama.store.delete(name):
            return _error(404, f"model '{name}' not found")
        ollama.loaded.pop(full_name(name), None)
        return web.Response()

    app.router.add_get("/", lambda r: web.Response(text="Ollama is running"))
    app.router.add_get("/api/version", lambda r: web.json_response({"version": VERSION}))
    app.router.add_get("/api/tags", lambda r: web.json_response({"models": ollama.tags()}))
    app.router.add_get("/api/ps", lambda r: web.json_response({"models": ollama.ps()}))
    app.router.add_post("/api/pull", pull)
    app.router.add_post("/api/show", show)
    app.router.add_delete("/api/delete", delete)
    app.router.add_post("/api/generate", lambda r: generate(r, chat=False))
    app.router.add_post("/api/chat", lambda r: generate(r, chat=True))
    return app


def _reply(name: str, chat: bool, text: str, done: bool) -> dict:
    reply: dict = {"model": name, "created_at": _now()}
    if chat:
        reply["message"] = {"role": "assistant", "content": text}
    else:
        reply["response"] = text
    reply["done"] = done
    return reply


def _port(options) -> None:
    """OLLAMA_HOST (``host:port``, as the chart sets it) overrides the adapter's default port
    (serve listens on ``options.port`` once the app is made)."""
    host = os.environ.get("OLLAMA_HOST", "")
    if host.rsplit(":", 1)[-1].isdigit():
        options.port = int(host.rsplit(":", 1)[-1])


if __name__ == "__main__":
    serve.main(make_app)
