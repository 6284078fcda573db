package main

import (
	"context"
	"encoding/json"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"berth.dev/berth/internal/syncbuf"
	"berth.dev/berth/nodes/lab"
	"berth.dev/berth/nodes/lab/labtest"
)

// TestServeE2E: berth serve follows the lab's fleet repository. Pushes of
// an image change are rolled out (their push-to-ready times measured), a
// git revert rolls back, a broken commit keeps the running pods and says
// where it is broken, and the next good commit proceeds.
func TestServeE2E(t *testing.T) {
	if testing.Short() {
		t.Skip("testing.Short: brings up a lab and builds berth")
	}
	l := labtest.Start(t, lab.Options{Nodes: 3})
	bin := buildBerth(t, "e2e-serve")
	environ := map[string]string{"BERTH_REPO": l.Repo, "BERTH_SSH_KEY": l.SSHKey, "BERTH_KNOWN_HOSTS": l.KnownHosts}
	t.Cleanup(func() {
		for _, m := range l.Machines {
			berth(t, environ, "machines", "uninstall", m.Name, "--purge")
		}
	})
	if code, out, errOut := berth(t, environ, "machines", "bootstrap", "--binary", bin); code != exitOK {
		t.Fatalf("bootstrap: %s%s", out, errOut)
	}

	// serve runs berth serve in this process until the returned stop.
	serve := func(environ map[string]string, args ...string) (stop func()) {
		var logs syncbuf.Buffer
		ctx, cancel := context.WithCancel(context.Background())
		served := make(chan int)
		go func() {
			e := &env{stdout: &logs, stderr: &logs, getenv: func(k string) string { return environ[k] },
				log: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))}
			served <- run(ctx, append([]string{"serve"}, args...), e)
		}()
		stop = sync.OnceFunc(func() {
			cancel()
			if code := <-served; code != exitOK {
				t.Errorf("serve %s exited %d", strings.Join(args, " "), code)
			}
			if t.Failed() {
				t.Logf("serve's log:\n%s", logs.String())
			}
		})
		t.Cleanup(stop)
		return stop
	}
	stopLocal := serve(environ, "--resync", "2s")

	// podsOn waits until the fleet runs exactly 3 ready echo pods of image
	// tag and nothing else, and returns when it first saw that.
	podsOn := func(tag string, timeout time.Duration) time.Time {
		t.Helper()
		deadline := time.Now().Add(timeout)
		for time.Now().Before(deadline) {
			code, out, _ := berth(t, environ, "get", "pods", "-o", "json")
			var ps []observedPodJSON
			if code == exitOK && json.Unmarshal([]byte(out), &ps) == nil && len(ps) == 3 &&
				!slices.ContainsFunc(ps, func(p observedPodJSON) bool {
					return !p.Ready || p.Terminating || !strings.HasSuffix(p.ContainerStatuses[0].Image, "berth/echo:"+tag)
				}) {
				return time.Now()
			}
			time.Sleep(50 * time.Millisecond)
		}
		t.Fatalf("the fleet did not run 3 ready pods of echo:%s within %v", tag, timeout)
		return time.Time{}
	}
	podsOn("1", 3*time.Minute)

	// Pushes of an image change, alternately 2 and 1: push to all new pods
	// Ready.
	var took []time.Duration
	tag := "1"
	for i := range 4 {
		next := map[string]string{"1": "2", "2": "1"}[tag]
		start := time.Now()
		pushChange(t, l.Repo, "echo "+next, func(dir string) {
			editFile(t, filepath.Join(dir, "app.yaml"), "berth/echo:"+tag, "berth/echo:"+next)
		})
		took = append(took, podsOn(next, 2*time.Minute).Sub(start))
		t.Logf("push %d (echo:%s): ready after %v", i+1, next, took[len(took)-1].Round(time.Millisecond))
		tag = next
	}
	slices.Sort(took)
	t.Logf("push to ready, %d pushes: p50 %v, max %v", len(took), took[len(took)/2].Round(time.Millisecond), took[len(took)-1].Round(time.Millisecond))

	// git revert rolls back.
	dir := filepath.Join(t.TempDir(), "clone")
	gitIn(t, "", "clone", "-q", "-b", "main", l.Repo, dir)
	gitIn(t, dir, "revert", "--no-edit", "HEAD")
	gitIn(t, dir, "push", "-q", "origin", "main")
	back := map[string]string{"1": "2", "2": "1"}[tag]
	podsOn(back, 2*time.Minute)
	tag = back

	// A broken commit keeps what runs, and says where.
	broken := pushChange(t, l.Repo, "broken", func(dir string) {
		editFile(t, filepath.Join(dir, "app.yaml"), "  replicas: 3", "  replicas: three")
	})
	deadline := time.Now().Add(time.Minute)
	for {
		sum := gitIn(t, l.Repo, "show", "berth/status:summary.yaml")
		if strings.Contains(sum, "commit: "+broken) && strings.Contains(sum, "outcome: Failed") && strings.Contains(sum, "app.yaml:") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no Failed status for the broken commit:\n%s", sum)
		}
		time.Sleep(100 * time.Millisecond)
	}
	podsOn(tag, 10*time.Second)

	// The next good commit proceeds.
	next := map[string]string{"1": "2", "2": "1"}[tag]
	pushChange(t, l.Repo, "fixed", func(dir string) {
		editFile(t, filepath.Join(dir, "app.yaml"), "  replicas: three", "  replicas: 3")
		editFile(t, filepath.Join(dir, "app.yaml"), "berth/echo:"+tag, "berth/echo:"+next)
	})
	podsOn(next, 2*time.Minute)
	if log := gitIn(t, l.Repo, "log", "--notes=berth", "-3", "--format=%h %s%n%N", "main"); !strings.Contains(log, "Failed - 1 problem") {
		t.Errorf("git log --notes=berth does not show the broken commit's outcome:\n%s", log)
	}
	tag = next
	stopLocal()

	// The same repository as a remote (a file:// URL, cloned and fetched
	// as https or ssh ones are): polled every --interval, status pushed
	// back. The commit adds a CronJob, which serve runs on its schedule.
	remote := maps.Clone(environ)
	remote["BERTH_REPO"] = "file://" + l.Repo
	serve(remote, "--resync", "2s", "--interval", "500ms")
	next = map[string]string{"1": "2", "2": "1"}[tag]
	withCron := pushChange(t, l.Repo, "echo and a CronJob", func(dir string) {
		editFile(t, filepath.Join(dir, "app.yaml"), "berth/echo:"+tag, "berth/echo:"+next)
		if err := os.WriteFile(filepath.Join(dir, "cron.yaml"), []byte(tickCronJob), 0o644); err != nil {
			t.Fatal(err)
		}
	})
	podsOn(next, 2*time.Minute)
	waitFor(t, time.Minute, "status of the remote's commit pushed back", func() bool {
		sum := gitIn(t, l.Repo, "show", "berth/status:summary.yaml")
		return strings.Contains(sum, "commit: "+withCron) && strings.Contains(sum, "outcome: Ready")
	})
	// A minute boundary, then the Job's pod runs to completion.
	waitFor(t, 150*time.Second, "a pod of the CronJob's Job succeeded", func() bool {
		_, out, _ := berth(t, environ, "get", "pods", "-n", "jobs", "-o", "json")
		var ps []struct {
			Name  string `json:"name"`
			Phase string `json:"phase"`
		}
		if json.Unmarshal([]byte(out), &ps) != nil {
			return false
		}
		return slices.ContainsFunc(ps, func(p struct {
			Name  string `json:"name"`
			Phase string `json:"phase"`
		}) bool {
			return strings.HasPrefix(p.Name, "tick-") && p.Phase == "Succeeded"
		})
	})
	waitFor(t, 30*time.Second, "the CronJob's last schedule in status", func() bool {
		code, out, _ := berth(t, environ, "get", "cronjobs", "-n", "jobs", "-o", "json")
		return code == exitOK && strings.Contains(out, "tick") && strings.Contains(out, "lastScheduleTime")
	})
	podsOn(next, 10*time.Second) // the Deployment is left alone
}

// tickCronJob runs a pod every minute that prints a line and exits.
const tickCronJob = `apiVersion: v1
kind: Namespace
metadata:
  name: jobs
---
apiVersion: batch/v1
kind: CronJob
metadata:
  name: tick
  namespace: jobs
spec:
  schedule: "* * * * *"
  concurrencyPolicy: Forbid
  successfulJobsHistoryLimit: 1
  jobTemplate:
    spec:
      backoffLimit: 2
      template:
        spec:
          restartPolicy: Never
          securityContext:
            runAsNonRoot: true
            runAsUser: 65532
            seccompProfile:
              type: RuntimeDefault
          containers:
            - name: tick
              image: 198.18.0.1:5000/berth/echo:1
              command: ["sh", "-c", "echo tick"]
              resources:
                requests:
                  cpu: 10m
                  memory: 16Mi
                limits:
                  cpu: 100m
                  memory: 32Mi
              securityContext:
                readOnlyRootFilesystem: true
                allowPrivilegeEscalation: false
                capabilities:
                  drop: ["ALL"]
`
