package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"berth.dev/berth/internal/syncbuf"
)

// gitIn runs git in dir and returns its output.
func gitIn(t *testing.T, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=e2e", "GIT_AUTHOR_EMAIL=e2e@test", "GIT_COMMITTER_NAME=e2e", "GIT_COMMITTER_EMAIL=e2e@test")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

// pushChange clones repo, lets change edit the clone, commits and pushes
// to main, and returns the new commit.
func pushChange(t *testing.T, repo, message string, change func(dir string)) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "clone")
	gitIn(t, "", "clone", "-q", "-b", "main", repo, dir)
	change(dir)
	gitIn(t, dir, "add", "-A")
	gitIn(t, dir, "commit", "-q", "-m", message)
	gitIn(t, dir, "push", "-q", "origin", "main")
	return gitIn(t, dir, "rev-parse", "HEAD")
}

func editFile(t *testing.T, path, old, new string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), old) {
		t.Fatalf("%s has no %q", path, old)
	}
	if err := os.WriteFile(path, []byte(strings.Replace(string(b), old, new, 1)), 0o644); err != nil {
		t.Fatal(err)
	}
}

// observedPods is `berth get pods -o json`, trimmed to what the test checks.
type observedPodJSON struct {
	Machine           string `json:"machine"`
	Name              string `json:"name"`
	Ready             bool   `json:"ready"`
	Terminating       bool   `json:"terminating"`
	ContainerStatuses []struct {
		Image string `json:"image"`
	} `json:"containerStatuses"`
}

// TestReconcileE2E: the example fleet reconciled onto a lab of three
// machines with reconcile --once, then an image change rolled out, a broken
// commit refused with nothing lost, an empty render refused unless allowed,
// and status and notes in git.
func TestReconcileE2E(t *testing.T) {
	if testing.Short() {
		t.Skip("testing.Short: brings up a lab and builds berth")
	}
	f := startLabFleet(t, "e2e-reconcile")
	l, bin, env, run := f.lab, f.bin, f.env, f.run
	pods := func() []observedPodJSON {
		t.Helper()
		code, out, _ := berth(t, env, "get", "pods", "-A", "-o", "json")
		if code != exitOK {
			t.Fatalf("get pods: exit %d", code)
		}
		var ps []observedPodJSON
		if err := json.Unmarshal([]byte(out), &ps); err != nil {
			t.Fatalf("get pods -o json: %v\n%s", err, out)
		}
		return ps
	}
	head := gitIn(t, l.Repo, "rev-parse", "main")

	// 1. The example fleet: three echo pods, one per machine, Ready.
	code, out, _ := run("reconcile", "--once", "--timeout", "3m")
	if code != exitOK || !strings.Contains(out, "Ready: 3/3 pods ready on 3/3 machines") {
		t.Fatalf("first reconcile: exit %d, %q", code, out)
	}
	ps := pods()
	machines := map[string]bool{}
	for _, p := range ps {
		machines[p.Machine] = true
		if !p.Ready || !strings.HasSuffix(p.ContainerStatuses[0].Image, "berth/echo:1") {
			t.Errorf("pod %s on %s: ready %v image %v", p.Name, p.Machine, p.Ready, p.ContainerStatuses)
		}
	}
	if len(ps) != 3 || len(machines) != 3 {
		t.Errorf("%d pods on %d machines; want 3 on 3", len(ps), len(machines))
	}
	if msg := gitIn(t, l.Repo, "log", "-1", "--format=%s", "berth/status"); msg != "status: "+head[:7]+" Ready - 3/3 pods ready" {
		t.Errorf("status commit: %q", msg)
	}
	if note := gitIn(t, l.Repo, "notes", "--ref=berth", "show", head); !strings.HasPrefix(note, "Ready - 3/3 pods ready") {
		t.Errorf("note on %s: %q", head[:7], note)
	}
	statusCommits := gitIn(t, l.Repo, "rev-list", "--count", "berth/status")

	// 2. Again: nothing to do, no new status commit.
	if code, out, _ := run("reconcile", "--once", "--timeout", "1m"); code != exitOK || !strings.Contains(out, "after 1 passes") {
		t.Errorf("second reconcile: exit %d, %q; want converged in one pass", code, out)
	}
	if n := gitIn(t, l.Repo, "rev-list", "--count", "berth/status"); n != statusCommits {
		t.Errorf("status commits %s -> %s after a pass that changed nothing", statusCommits, n)
	}

	if code, out, _ := run("plan", "--detailed-exitcode"); code != exitOK {
		t.Errorf("plan against converged machines: exit %d\n%s", code, out)
	}

	// 3. An image change: planned against the machines, then rolled out
	// with maxSurge 1 and maxUnavailable 0 holding at every observation.
	v2 := pushChange(t, l.Repo, "echo 2", func(dir string) {
		editFile(t, filepath.Join(dir, "app.yaml"), "berth/echo:1", "berth/echo:2")
	})
	planFile := filepath.Join(t.TempDir(), "plan.json")
	if code, out, _ := run("plan", "--detailed-exitcode", "--out", planFile); code != exitChanges || !strings.Contains(out, "default/echo-") {
		t.Errorf("plan of the image change: exit %d\n%s", code, out)
	}
	// A saved plan whose branch moved since is refused, nothing sent.
	pushChange(t, l.Repo, "a comment", func(dir string) {
		editFile(t, filepath.Join(dir, "app.yaml"), "apiVersion: apps/v1", "# reviewed\napiVersion: apps/v1")
	})
	if code, _, errOut := run("apply", planFile); code != exitError || !strings.Contains(errOut, "stale") || !strings.Contains(errOut, "was at "+v2[:7]+" when planned") {
		t.Errorf("apply of a plan whose branch moved: exit %d, %q", code, errOut)
	}
	for _, p := range pods() {
		if !strings.HasSuffix(p.ContainerStatuses[0].Image, "berth/echo:1") {
			t.Errorf("a refused plan changed pod %s: %v", p.Name, p.ContainerStatuses)
		}
	}
	if code, _, _ := run("plan", "--out", planFile); code != exitOK {
		t.Fatalf("plan --out: exit %d", code)
	}
	done := make(chan struct{})
	observations := make(chan string, 1)
	go func() {
		n, worst := 0, ""
		defer func() { observations <- fmt.Sprintf("%d observations%s", n, worst) }()
		for {
			select {
			case <-done:
				return
			case <-time.After(100 * time.Millisecond):
			}
			code, out, _ := berth(t, env, "get", "pods", "-o", "json")
			var ps []observedPodJSON
			if code != exitOK || json.Unmarshal([]byte(out), &ps) != nil {
				continue
			}
			n++
			available := 0
			for _, p := range ps {
				if p.Ready && !p.Terminating {
					available++
				}
			}
			if available < 3 || len(ps) > 4 {
				worst += fmt.Sprintf("; %d available of %d pods", available, len(ps))
			}
		}
	}()
	// A controller killed (SIGKILL) half way through the rollout, once it
	// has surged: the next one finishes the job, no pod twice, none lost.
	// The controller is berth apply of the saved plan.
	killed := exec.Command(bin, "apply", planFile, "--timeout", "3m")
	killed.Env = append(os.Environ(), "BERTH_REPO="+l.Repo, "BERTH_SSH_KEY="+l.SSHKey, "BERTH_KNOWN_HOSTS="+l.KnownHosts)
	var killedOut syncbuf.Buffer
	killed.Stdout, killed.Stderr = &killedOut, &killedOut
	if err := killed.Start(); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(time.Minute); ; {
		_, out, _ := berth(t, env, "get", "pods", "-o", "json")
		var ps []observedPodJSON
		if json.Unmarshal([]byte(out), &ps) == nil && len(ps) == 4 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the rollout never surged to 4 pods; the killed controller said:\n%s", killedOut.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	killed.Process.Kill()
	killed.Wait()
	t.Logf("controller killed mid-rollout; it had said:\n%s", killedOut.String())
	// The plan it carried out no longer describes the machines.
	if code, _, errOut := run("apply", planFile); code != exitError || !strings.Contains(errOut, "what the machines run changed") {
		t.Errorf("apply of a plan the machines moved on from: exit %d, %q", code, errOut)
	}
	code, out, _ = run("reconcile", "--once", "--timeout", "3m")
	close(done)
	if obs := <-observations; strings.Contains(obs, ";") {
		t.Errorf("the rollout left its bounds (3 available, at most 4 pods): %s", obs)
	} else {
		t.Logf("rollout within bounds: %s", obs)
	}
	if code != exitOK || !strings.Contains(out, "Ready: 3/3") {
		t.Fatalf("rollout: exit %d, %q", code, out)
	}
	ps = pods()
	for _, p := range ps {
		if !p.Ready || !strings.HasSuffix(p.ContainerStatuses[0].Image, "berth/echo:2") {
			t.Errorf("after the rollout: pod %s ready %v image %v", p.Name, p.Ready, p.ContainerStatuses)
		}
	}
	if len(ps) != 3 {
		t.Errorf("%d pods after a rollout finished by a second controller; want 3", len(ps))
	}

	// An agent stopped in the middle of a rollout: the rollout pauses (its
	// pod counts as unavailable, so no other is taken away) and goes on
	// once the agent is back.
	v1again := pushChange(t, l.Repo, "echo 1 again", func(dir string) {
		editFile(t, filepath.Join(dir, "app.yaml"), "berth/echo:2", "berth/echo:1")
	})
	lab2 := l.Machines[1]
	if err := syscall.Kill(readPID(t, filepath.Join(lab2.Agent.StateDir, "agent.pid")), syscall.SIGKILL); err != nil {
		t.Fatalf("kill the agent of lab2: %v", err)
	}
	code, _, downOut := run("reconcile", "--once", "--timeout", "10s")
	if code != exitError || !strings.Contains(downOut, "lab2") {
		t.Errorf("rollout with lab2's agent down: exit %d, %q; want not converged, naming lab2", code, downOut)
	}
	_, out, _ = berth(t, env, "get", "pods", "-o", "json")
	var paused []observedPodJSON
	if err := json.Unmarshal([]byte(out), &paused); err != nil {
		t.Fatalf("get pods with lab2 down: %v\n%s", err, out)
	}
	old := 0
	for _, p := range paused {
		if strings.HasSuffix(p.ContainerStatuses[0].Image, "berth/echo:2") && p.Ready && !p.Terminating {
			old++
		}
	}
	if old != 2 || len(paused) > 3 {
		t.Errorf("paused rollout on lab1 and lab3: %d old pods ready of %d (want both old ones kept, at most one surge pod): %+v", old, len(paused), paused)
	}
	if code, _, _ := run("machines", "bootstrap", "--binary", bin, "lab2"); code != exitOK {
		t.Fatal("bootstrap of lab2 after its agent was killed failed")
	}
	if code, out, _ := run("reconcile", "--once", "--timeout", "3m"); code != exitOK || !strings.Contains(out, "Ready: 3/3 pods ready on 3/3 machines") {
		t.Fatalf("rollout resumed: exit %d, %q", code, out)
	}
	for _, p := range pods() {
		if !p.Ready || !strings.HasSuffix(p.ContainerStatuses[0].Image, "berth/echo:1") {
			t.Errorf("after the resumed rollout: pod %s ready %v image %v", p.Name, p.Ready, p.ContainerStatuses)
		}
	}

	// 4. A broken commit changes nothing and says where.
	pushChange(t, l.Repo, "broken", func(dir string) {
		editFile(t, filepath.Join(dir, "app.yaml"), "  replicas: 3", "  replicas: three")
	})
	code, _, errOut := run("reconcile", "--once", "--timeout", "1m")
	if code != exitError || !strings.Contains(errOut, "app.yaml:") {
		t.Errorf("broken commit: exit %d, stderr %q; want 1 and the file:line", code, errOut)
	}
	if ps := pods(); len(ps) != 3 || !strings.HasSuffix(ps[0].ContainerStatuses[0].Image, "berth/echo:1") {
		t.Errorf("after a broken commit the running pods changed: %+v", ps)
	}
	if sum := gitIn(t, l.Repo, "show", "berth/status:summary.yaml"); !strings.Contains(sum, "outcome: Failed") || !strings.Contains(sum, v1again) {
		t.Errorf("status after a broken commit:\n%s", sum)
	}
	if mem := gitIn(t, l.Repo, "show", "berth/status:memory.json"); !strings.Contains(mem, "echo") {
		t.Errorf("the controller's memory did not survive a broken commit:\n%s", mem)
	}

	// 5. A commit without workloads is refused unless allowed.
	pushChange(t, l.Repo, "no workloads", func(dir string) {
		if err := os.Remove(filepath.Join(dir, "app.yaml")); err != nil {
			t.Fatal(err)
		}
	})
	if code, _, _ := run("reconcile", "--once", "--timeout", "1m"); code != exitError || len(pods()) != 3 {
		t.Errorf("empty render: exit %d with %d pods left; want refused, 3 pods", code, len(pods()))
	}
	if code, _, _ := run("reconcile", "--once", "--timeout", "2m", "--allow-empty"); code != exitOK {
		t.Errorf("empty render allowed: exit %d", code)
	}
	if ps := pods(); len(ps) != 0 {
		t.Errorf("pods left after the Deployment was removed: %+v", ps)
	}
}
