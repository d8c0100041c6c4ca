"""The Job controller: runs pods until ``completions`` succeed (NonIndexed or Indexed, up to
``parallelism`` at a time), fails the Job past ``backoffLimit`` or ``activeDeadlineSeconds``,
honours ``suspend``, reports the conditions ``kubectl wait --for=condition=complete`` reads, and
deletes finished Jobs after ``ttlSecondsAfterFinished`` on the lab clock."""

from __future__ import annotations

from labsim.kube.controllers.events import WARNING, EventRecorder
from labsim.kube.controllers.pods import (
    condition,
    controlled_by,
    is_active,
    is_ready,
    pod_from_template,
    set_condition,
)
from labsim.kube.controllers.times import parse_rfc3339, rfc3339
from labsim.kube.controllers.workqueue import Controller, Key, by_controller, by_name

COMPLETION_INDEX = "batch.kubernetes.io/job-completion-index"


class JobController(Controller):
    name = "job-controller"

    def __init__(self, cluster) -> None:
        super().__init__(cluster)
        self.jobs = self.res("batch/v1", "Job")
        self.pods = self.res("v1", "Pod")
        self.events = EventRecorder(self.store, self.clock, self.name)

    def watches(self):
        return [(self.jobs, by_name), (self.pods, by_controller("Job"))]

    async def reconcile(self, key: Key) -> None:
        job = self.store.get(self.jobs, *key)
        if job is None or job["metadata"].get("deletionTimestamp"):
            return
        now = self.clock.now()
        if _finished(job):
            self._expire(job, key, now)
            return
        pods = [p for p in self.store.list(self.pods, key[0], labels=(job["spec"].get("selector") or {})
                                           .get("matchLabels")) if controlled_by(p, job)]
        status = job.setdefault("status", {})
        status.setdefault("startTime", rfc3339(now))
        active = [p for p in pods if is_active(p)]
        succeeded = [p for p in pods if p["status"].get("phase") == "Succeeded"]
        # Counts only grow: a finished pod deleted by someone else still counts, as the real
        # controller's pod finalizers ensure.
        failed = max(int(status.get("failed", 0)), sum(1 for p in pods if p["status"].get("phase") == "Failed") + sum(
            int(cs.get("restartCount", 0)) for p in pods for cs in p["status"].get("containerStatuses") or []))
        failure = self._failure(job, key, failed, now)
        if job["spec"].get("suspend"):
            self._stop(job, active)
            active = []
            status["conditions"] = set_condition(status.get("conditions") or [], "Suspended", "True", now,
                                                 "JobSuspended", "Job suspended", probe_time=True)
        elif failure:
            self._stop(job, active)
            active = []
            self._finish(job, "Failed", *failure, now)
        elif self._complete(job, succeeded, active):
            self._stop(job, active)
            active = []
            self._finish(job, "Complete", "CompletionsReached", "Reached expected number of succeeded pods", now)
            self.events.record(job, "Completed", "Job completed")
        else:
            if (condition(job, "Suspended") or {}).get("status") == "True":
                status["conditions"] = set_condition(status["conditions"], "Suspended", "False", now,
                                                     "JobResumed", "Job resumed", probe_time=True)
            active += self._start_pods(job, active, succeeded)
        status.update(active=len(active), ready=sum(1 for p in active if is_ready(p)),
                      succeeded=len(succeeded), failed=failed, terminating=0,
                      uncountedTerminatedPods={})
        if job["spec"].get("completionMode") == "Indexed":
            status["completedIndexes"] = _ranges(sorted({_index(p) for p in succeeded}))
        for field in ("active", "succeeded", "failed"):
            if not status[field]:
                status.pop(field)
        self.store.update(job, subresource="status")

    def _failure(self, job: dict, key: Key, failed: int, now: float) -> tuple[str, str] | None:
        if failed > int(job["spec"].get("backoffLimit", 6)):
            return "BackoffLimitExceeded", "Job has reached the specified backoff limit"
        deadline = job["spec"].get("activeDeadlineSeconds")
        if deadline is not None:
            ends = parse_rfc3339(job["status"]["startTime"]) + int(deadline)
            if now >= ends:
                return "DeadlineExceeded", "Job was active longer than specified deadline"
            self.at(ends, key)
        return None

    def _complete(self, job: dict, succeeded: list[dict], active: list[dict]) -> bool:
        completions = job["spec"].get("completions")
        if completions is None:  # a work queue: done once one pod succeeded and none runs
            return bool(succeeded) and not active
        if job["spec"].get("completionMode") == "Indexed":
            return len({_index(p) for p in succeeded}) >= int(completions)
        return len(succeeded) >= int(completions)

    def _start_pods(self, job: dict, active: list[dict], succeeded: list[dict]) -> list[dict]:
        spec = job["spec"]
        completions = spec.get("completions")
        parallelism = int(spec.get("parallelism", 1))
        remaining = parallelism if completions is None else min(parallelism, int(completions) - len(succeeded))
        wanted = max(remaining - len(active), 0)
        if spec.get("completionMode") == "Indexed":
            taken = {_index(p) for p in active + succeeded}
            indexes = [i for i in range(int(completions or 0)) if i not in taken][:wanted]
        else:
            indexes = [None] * wanted
        created = []
        for index in indexes:
            pod = pod_from_template(spec["template"], job)
            if index is not None:
                pod["metadata"]["generateName"] = f"{job['metadata']['name']}-{index}-"
                pod["metadata"].setdefault("annotations", {})[COMPLETION_INDEX] = str(index)
                pod["metadata"]["labels"][COMPLETION_INDEX] = str(index)
                pod["spec"].setdefault("hostname", f"{job['metadata']['name']}-{index}")
            created.append(self.store.create(pod))
            self.events.record(job, "SuccessfulCreate", f"Created pod: {created[-1]['metadata']['name']}")
        return created

    def _stop(self, job: dict, active: list[dict]) -> None:
        for pod in active:
            self.store.delete(self.pods, pod["metadata"]["namespace"], pod["metadata"]["name"])
            self.events.record(job, "SuccessfulDelete", f"Deleted pod: {pod['metadata']['name']}")

    def _finish(self, job: dict, outcome: str, reason: str, message: str, now: float) -> None:
        status = job["status"]
        conditions = status.get("conditions") or []
        target = "SuccessCriteriaMet" if outcome == "Complete" else "FailureTarget"
        conditions = set_condition(conditions, target, "True", now, reason, message, probe_time=True)
        status["conditions"] = set_condition(conditions, outcome, "True", now, reason, message, probe_time=True)
        if outcome == "Complete":
            status["completionTime"] = rfc3339(now)
        else:
            self.events.record(job, reason, message, WARNING)

    def _expire(self, job: dict, key: Key, now: float) -> None:
        ttl = job["spec"].get("ttlSecondsAfterFinished")
        if ttl is None:
            return
        done = next(c for c in job["status"]["conditions"] if c["type"] in ("Complete", "Failed")
                    and c["status"] == "True")
        expires = parse_rfc3339(done["lastTransitionTime"]) + int(ttl)
        if now >= expires:
            self.store.delete(self.jobs, *key)
        else:
            self.at(expires, key)


def _finished(job: dict) -> bool:
    return any((condition(job, t) or {}).get("status") == "True" for t in ("Complete", "Failed"))


def _index(pod: dict) -> int:
    return int((pod["metadata"].get("annotations") or {}).get(COMPLETION_INDEX, -1))


def _ranges(indexes: list[int]) -> str:
    """Completed indexes as the API writes them: "0-3,5"."""
    spans: list[list[int]] = []
    for i in indexes:
        if spans and spans[-1][1] == i - 1:
            spans[-1][1] = i
        else:
            spans.append([i, i])
    return ",".join(f"{a}-{b}" if a != b else str(a) for a, b in spans)
