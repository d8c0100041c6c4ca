"""The CronJob controller, on the lab clock: at each scheduled time (the latest missed one, as
the real controller) it creates a Job named ``<cronjob>-<minutes since epoch>``, within
concurrencyPolicy and startingDeadlineSeconds, and keeps the configured history of finished Jobs.
Advancing the lab clock past a schedule fires it."""

from __future__ import annotations

import copy

from labsim.kube.controllers.events import WARNING, EventRecorder
from labsim.kube.controllers.pods import condition, controlled_by, controller_ref
from labsim.kube.controllers.schedule import Schedule, ScheduleError
from labsim.kube.controllers.times import parse_rfc3339, rfc3339
from labsim.kube.controllers.workqueue import Controller, Key, by_controller, by_name
from labsim.kube.store import StoreError

SCHEDULED_AT = "batch.kubernetes.io/cronjob-scheduled-timestamp"
_MAX_MISSED = 100  # the real controller gives up counting missed runs here


class CronJobController(Controller):
    name = "cronjob-controller"

    def __init__(self, cluster) -> None:
        super().__init__(cluster)
        self.cronjobs = self.res("batch/v1", "CronJob")
        self.jobs = self.res("batch/v1", "Job")
        self.events = EventRecorder(self.store, self.clock, self.name)
        self._seen_done: set[str] = set()

    def watches(self):
        return [(self.cronjobs, by_name), (self.jobs, by_controller("CronJob"))]

    async def reconcile(self, key: Key) -> None:
        cron = self.store.get(self.cronjobs, *key)
        if cron is None or cron["metadata"].get("deletionTimestamp"):
            return
        try:
            schedule = Schedule.parse(cron["spec"]["schedule"], cron["spec"].get("timeZone"))
        except (ScheduleError, KeyError) as err:
            self.events.record(cron, "UnparseableSchedule", f"unparseable schedule: {err}", WARNING)
            return
        now = self.clock.now()
        jobs = [j for j in self.store.list(self.jobs, key[0]) if controlled_by(j, cron)]
        active = [j for j in jobs if not _outcome(j)]
        status = cron.setdefault("status", {})
        if not cron["spec"].get("suspend"):
            due = self._latest_due(cron, schedule, now)
            if due is not None and self._may_start(cron, due, active, now):
                active.append(self._create_job(cron, due))
                status["lastScheduleTime"] = rfc3339(due)
            last = parse_rfc3339(status["lastScheduleTime"]) if status.get("lastScheduleTime") else now
            self.at(schedule.next_after(max(now, last)), key)
        self._note_finished(cron, jobs)
        self._prune(cron, jobs)
        status["active"] = [_reference(j) for j in active]
        if not status["active"]:
            del status["active"]
        done = [parse_rfc3339(j["status"]["completionTime"]) for j in jobs
                if _outcome(j) == "Complete" and j["status"].get("completionTime")]
        if done:
            status["lastSuccessfulTime"] = rfc3339(max(done))
        self.store.update(cron, subresource="status")

    def _latest_due(self, cron: dict, schedule: Schedule, now: float) -> float | None:
        """The most recent scheduled time not yet run, or None."""
        last = cron["status"].get("lastScheduleTime") or cron["metadata"]["creationTimestamp"]
        due, cursor = None, parse_rfc3339(last)
        for _ in range(_MAX_MISSED + 1):
            following = schedule.next_after(cursor)
            if following > now:
                return due
            due = cursor = following
        self.events.record(cron, "TooManyMissedTimes", "too many missed start times. Set or decrease "
                           ".spec.startingDeadlineSeconds or check clock skew", WARNING)
        return due

    def _may_start(self, cron: dict, due: float, active: list[dict], now: float) -> bool:
        deadline = cron["spec"].get("startingDeadlineSeconds")
        if deadline is not None and now - due > int(deadline):
            self.events.record(cron, "MissSchedule", f"Missed scheduled time to start a job: {rfc3339(due)}",
                               WARNING)
            cron["status"]["lastScheduleTime"] = rfc3339(due)
            return False
        policy = cron["spec"].get("concurrencyPolicy", "Allow")
        if active and policy == "Forbid":
            self.events.record(cron, "JobAlreadyActive",
                               "Not starting job because prior execution is running and concurrency policy is Forbid")
            return False
        if active and policy == "Replace":
            for job in active:
                self.store.delete(self.jobs, job["metadata"]["namespace"], job["metadata"]["name"])
                self.events.record(cron, "SuccessfulDelete", f"Deleted job {job['metadata']['name']}")
            active.clear()
        return True

    def _create_job(self, cron: dict, due: float) -> dict:
        template = copy.deepcopy(cron["spec"]["jobTemplate"])
        meta = template.get("metadata") or {}
        job = {"apiVersion": "batch/v1", "kind": "Job",
               "metadata": {"name": f"{cron['metadata']['name']}-{int(due // 60)}",
                            "namespace": cron["metadata"]["namespace"],
                            "labels": meta.get("labels") or {},
                            "annotations": {**(meta.get("annotations") or {}), SCHEDULED_AT: rfc3339(due)},
                            "ownerReferences": [controller_ref(cron)]},
               "spec": template.get("spec") or {}}
        try:
            created = self.store.create(job)
        except StoreError as err:
            existing = self.store.get(self.jobs, job["metadata"]["namespace"], job["metadata"]["name"])
            if err.code != 409 or existing is None:
                raise
            return existing  # this run was started before (its status write was lost)
        self.events.record(cron, "SuccessfulCreate", f"Created job {created['metadata']['name']}")
        return created

    def _note_finished(self, cron: dict, jobs: list[dict]) -> None:
        for job in jobs:
            outcome = _outcome(job)
            if outcome and job["metadata"]["uid"] not in self._seen_done:
                self._seen_done.add(job["metadata"]["uid"])
                self.events.record(cron, "SawCompletedJob",
                                   f"Saw completed job: {job['metadata']['name']}, condition: {outcome}")

    def _prune(self, cron: dict, jobs: list[dict]) -> None:
        for outcome, field, default in (("Complete", "successfulJobsHistoryLimit", 3),
                                        ("Failed", "failedJobsHistoryLimit", 1)):
            finished = sorted((j for j in jobs if _outcome(j) == outcome),
                              key=lambda j: (j["metadata"]["creationTimestamp"], j["metadata"]["name"]))
            limit = int(cron["spec"].get(field, default))
            for job in finished[:max(len(finished) - limit, 0)]:
                self.store.delete(self.jobs, job["metadata"]["namespace"], job["metadata"]["name"])
                self._seen_done.discard(job["metadata"]["uid"])
                self.events.record(cron, "SuccessfulDelete", f"Deleted job {job['metadata']['name']}")


def _outcome(job: dict) -> str | None:
    for outcome in ("Complete", "Failed"):
        if (condition(job, outcome) or {}).get("status") == "True":
            return outcome
    return None


def _reference(job: dict) -> dict:
    meta = job["metadata"]
    return {"apiVersion": "batch/v1", "kind": "Job", "name": meta["name"], "namespace": meta["namespace"],
            "uid": meta["uid"], "resourceVersion": meta.get("resourceVersion")}
