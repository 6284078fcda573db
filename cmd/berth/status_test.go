package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"berth.dev/berth/gitsource"
	"berth.dev/berth/internal/gittest"
	"berth.dev/berth/nodes/api"
	"berth.dev/berth/reconciler/live"
	"berth.dev/berth/reconciler/status"
	"berth.dev/berth/reconciler/workload"
)

// batch adds a workload of every other kind to the quickstart.
const batch = `apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: db
  labels: {app: db}
spec:
  replicas: 2
  serviceName: db
  selector:
    matchLabels: {app: db}
  template:
    metadata:
      labels: {app: db}
    spec:
      containers:
      - name: db
        image: 198.18.0.1:5000/berth/echo:1
---
apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: node-exporter
  labels: {app: node-exporter}
spec:
  selector:
    matchLabels: {app: node-exporter}
  template:
    metadata:
      labels: {app: node-exporter}
    spec:
      nodeSelector: {kubernetes.io/hostname: lab1}
      containers:
      - name: exporter
        image: 198.18.0.1:5000/berth/echo:1
---
apiVersion: batch/v1
kind: Job
metadata:
  name: migrate
  labels: {tier: batch}
spec:
  completions: 2
  template:
    spec:
      restartPolicy: Never
      containers:
      - name: migrate
        image: 198.18.0.1:5000/berth/echo:1
---
apiVersion: batch/v1
kind: CronJob
metadata:
  name: report
  labels: {tier: batch}
spec:
  schedule: "*/5 * * * *"
  timeZone: Europe/Berlin
  jobTemplate:
    metadata:
      labels: {tier: batch}
    spec:
      template:
        spec:
          restartPolicy: Never
          containers:
          - name: report
            image: 198.18.0.1:5000/berth/echo:1
`

// fleetRepo commits examples/quickstart and batch on main.
func fleetRepo(t testing.TB) (*gittest.Repo, string) {
	t.Helper()
	files := map[string]string{"batch.yaml": batch}
	for _, name := range []string{"app.yaml", "cluster.yaml", "machines.yaml"} {
		b, err := os.ReadFile(filepath.Join("..", "..", "examples", "quickstart", name))
		if err != nil {
			t.Fatal(err)
		}
		files[name] = string(b)
	}
	repo := gittest.New(t)
	return repo, repo.Commit(files, "quickstart")
}

// writeStatus writes the status of in as a status commit made at when.
func writeStatus(t testing.TB, path string, in status.Input, when time.Time) {
	t.Helper()
	ctx := context.Background()
	st, err := status.Build(in)
	if err != nil {
		t.Fatal(err)
	}
	repo, err := gitsource.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer repo.Close()
	_, changed, err := repo.WriteStatus(ctx, gitsource.Status{Branch: gitsource.DefaultStatusBranch, Protected: "main", Files: st.Files, Message: st.Message, Author: gitsource.Signature{When: when}})
	if err != nil || !changed {
		t.Fatalf("write status: changed %v, %v", changed, err)
	}
}

var machineNames = []string{"lab1", "lab2", "lab3"}

// pass is a hand-made pass: echo's 3 pods, one per machine, ready when
// ready is true, and the other workloads' statuses when others is true.
func pass(ready, others bool, down string) (*live.Pass, []live.Observed) {
	p := &live.Pass{Converged: ready && down == ""}
	var obs []live.Observed
	echo := workload.Owner{Kind: "Deployment", Namespace: "default", Name: "echo"}
	for i, m := range machineNames {
		mp := live.MachinePlan{Name: m, Reachable: m != down, InRepository: true}
		if m == down {
			mp.Err = "ssh: connect to 198.18.0.13:22: connection refused"
		}
		p.Machines = append(p.Machines, mp)
		pod := "echo-" + string(rune('a'+i))
		p.Pods = append(p.Pods, live.PodAction{Machine: m, Namespace: "default", Name: pod, Owner: echo, Action: live.Keep})
		o := live.Observed{Machine: m, Reachable: m != down, Err: mp.Err}
		if m != down {
			o.Node = api.NodeInfo{AgentVersion: "test"}
			o.Pods = []api.PodStatus{{Namespace: "default", Name: pod, Phase: "Running", Ready: ready}}
		}
		obs = append(obs, o)
	}
	n := int32(0)
	if ready {
		n = 3
	}
	p.Workloads = append(p.Workloads, live.WorkloadStatus{Owner: echo, Reason: "waiting for echo-a to be ready",
		Status: workload.Status{Replicas: 3, ReadyReplicas: n, UpdatedReplicas: 3, AvailableReplicas: n}})
	if others {
		// Minutes, not seconds: AGE counts from the real clock.
		started := time.Now().Add(-20*time.Minute - 5*time.Second)
		done := started.Add(42 * time.Second)
		scheduled := time.Now().Add(-30*time.Minute - 5*time.Second)
		p.Workloads = append(p.Workloads,
			live.WorkloadStatus{Owner: workload.Owner{Kind: "StatefulSet", Namespace: "default", Name: "db"},
				Status: workload.Status{Replicas: 2, ReadyReplicas: 2, UpdatedReplicas: 2, AvailableReplicas: 2}},
			live.WorkloadStatus{Owner: workload.Owner{Kind: "DaemonSet", Namespace: "default", Name: "node-exporter"},
				Status: workload.Status{DesiredNumberScheduled: 1, Replicas: 1, ReadyReplicas: 1, UpdatedReplicas: 1, AvailableReplicas: 1}},
			live.WorkloadStatus{Owner: workload.Owner{Kind: "Job", Namespace: "default", Name: "migrate"},
				Status: workload.Status{Succeeded: 2, StartTime: &started, CompletionTime: &done,
					Conditions: []workload.Condition{{Type: "Complete", Status: "True"}}}},
			live.WorkloadStatus{Owner: workload.Owner{Kind: "CronJob", Namespace: "default", Name: "report"}, Reason: "running report-29000000",
				Status: workload.Status{ActiveJobs: []string{"report-29000000"}, LastScheduleTime: &scheduled}},
			live.WorkloadStatus{Owner: workload.Owner{Kind: "Job", Namespace: "default", Name: "report-29000000"}, Reason: "1 pod running",
				Status: workload.Status{Active: 1, StartTime: &scheduled}},
		)
	}
	return p, obs
}

// fields splits each line of a table into its columns (two or more
// spaces apart, as tabwriter pads them).
func fields(out string) [][]string {
	var rows [][]string
	for _, l := range strings.Split(strings.TrimRight(out, "\n"), "\n") {
		rows = append(rows, regexp.MustCompile(`\s{2,}`).Split(strings.TrimSpace(l), -1))
	}
	return rows
}

func TestStatusBranchCommands(t *testing.T) {
	repo, source := fleetRepo(t)
	env := map[string]string{"BERTH_REPO": repo.Path()}
	now := time.Now()

	if code, _, errOut := berth(t, env, "status"); code != exitError || !strings.Contains(errOut, "no status yet on berth/status") {
		t.Errorf("status without a status branch: code %d, stderr %s", code, errOut)
	}
	if code, _, errOut := berth(t, env, "get", "deployments"); code != exitError || !strings.Contains(errOut, "no status yet") {
		t.Errorf("get deployments without a status branch: code %d, stderr %s", code, errOut)
	}

	// echo recorded 7 days ago, gone while a commit failed 6 days ago,
	// back 5 days ago: its AGE is 5d. The rest came 5 hours ago.
	p, obs := pass(false, false, "")
	writeStatus(t, repo.Path(), status.Input{Commit: source, Pass: p, Observed: obs}, now.Add(-7*24*time.Hour))
	writeStatus(t, repo.Path(), status.Input{Commit: source, Problems: []string{"app.yaml:3: bad"}}, now.Add(-6*24*time.Hour))
	writeStatus(t, repo.Path(), status.Input{Commit: source, Pass: p, Observed: obs}, now.Add(-5*24*time.Hour-time.Minute))
	p, obs = pass(true, true, "")
	writeStatus(t, repo.Path(), status.Input{Commit: source, Pass: p, Observed: obs}, now.Add(-5*time.Hour-10*time.Second))

	for _, tc := range []struct {
		args []string
		want [][]string
	}{
		{[]string{"get", "deployments"}, [][]string{{"NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"}, {"echo", "3/3", "3", "3", "5d"}}},
		{[]string{"get", "deploy", "-A", "-l", "app=echo"}, [][]string{{"NAMESPACE", "NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"}, {"default", "echo", "3/3", "3", "3", "5d"}}},
		{[]string{"get", "sts", "-o", "wide"}, [][]string{{"NAME", "READY", "AGE", "CONTAINERS", "IMAGES"}, {"db", "2/2", "5h", "db", "198.18.0.1:5000/berth/echo:1"}}},
		{[]string{"get", "daemonsets"}, [][]string{{"NAME", "DESIRED", "CURRENT", "READY", "UP-TO-DATE", "AVAILABLE", "NODE SELECTOR", "AGE"}, {"node-exporter", "1", "1", "1", "1", "1", "kubernetes.io/hostname=lab1", "5h"}}},
		{[]string{"get", "jobs", "-l", "tier=batch"}, [][]string{{"NAME", "STATUS", "COMPLETIONS", "DURATION", "AGE"}, {"migrate", "Complete", "2/2", "42s", "20m"}, {"report-29000000", "Running", "0/1", "30m", "30m"}}},
		{[]string{"get", "cj", "-n", "default"}, [][]string{{"NAME", "SCHEDULE", "TIMEZONE", "SUSPEND", "ACTIVE", "LAST SCHEDULE", "AGE"}, {"report", "*/5 * * * *", "Europe/Berlin", "False", "1", "30m", "5h"}}},
	} {
		code, out, errOut := berth(t, env, tc.args...)
		if code != exitOK || errOut != "" {
			t.Errorf("%v: code %d, stderr %s", tc.args, code, errOut)
		}
		if got := fields(out); !equalRows(got, tc.want) {
			t.Errorf("%v:\n%s\nwant %q", tc.args, out, tc.want)
		}
	}

	if code, out, errOut := berth(t, env, "get", "deployments", "-l", "app=nope"); code != exitOK || out != "" || errOut != "No resources found in namespace default.\n" {
		t.Errorf("no match: code %d, stdout %q, stderr %q", code, out, errOut)
	}
	if code, out, errOut := berth(t, env, "get", "deployments", "-n", "shop"); code != exitOK || out != "" || !strings.Contains(errOut, "No resources found in namespace shop") {
		t.Errorf("other namespace: code %d, stdout %q, stderr %q", code, out, errOut)
	}
	code, out, _ := berth(t, env, "get", "cronjobs", "-o", "json")
	var items []struct {
		Kind, Name    string
		Labels        map[string]string
		FirstRecorded time.Time
		Status        workload.Status
	}
	if err := json.Unmarshal([]byte(out), &items); code != exitOK || err != nil {
		t.Fatalf("-o json: code %d, %v:\n%s", code, err, out)
	}
	if len(items) != 1 || items[0].Kind != "CronJob" || items[0].Labels["tier"] != "batch" || len(items[0].Status.ActiveJobs) != 1 ||
		items[0].FirstRecorded.Unix() != now.Add(-5*time.Hour-10*time.Second).Unix() {
		t.Errorf("-o json: %+v", items)
	}

	code, out, errOut := berth(t, env, "status")
	if code != exitOK || errOut != "" {
		t.Errorf("status when Ready: code %d, stderr %s", code, errOut)
	}
	for _, want := range []string{
		"Commit:    " + source, "Outcome:   Ready", "Pods:      3/3 ready", "Machines:  3/3 reachable",
		"Status commits on berth/status:",
		"status: " + short(source) + " Ready - 3/3 pods ready",
		"status: " + short(source) + " Failed - 1 problem(s)",
		"Not converged:\n  CronJob default/report: running report-29000000\n  Job default/report-29000000: 1 pod running\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "not reconciled") || strings.Contains(out, "Unreachable") || strings.Contains(out, "echo") {
		t.Errorf("status of a converged fleet says more than it should:\n%s", out)
	}

	// A machine goes away while echo is not ready; main moves on.
	p, obs = pass(false, true, "lab3")
	writeStatus(t, repo.Path(), status.Input{Commit: source, Pass: p, Observed: obs}, now)
	next := repo.Commit(map[string]string{"README.md": "fleet\n"}, "docs")
	code, out, errOut = berth(t, env, "status")
	if code != exitError || errOut != "" {
		t.Errorf("status when Progressing: code %d, stderr %s", code, errOut)
	}
	for _, want := range []string{
		"Outcome:   Progressing", "Pods:      0/3 ready", "Machines:  2/3 reachable",
		"main is at " + short(next) + ": not reconciled yet; this status is about " + short(source),
		"Not converged:\n  Deployment default/echo: waiting for echo-a to be ready",
		"Unreachable machines:\n  lab3: ssh: connect to 198.18.0.13:22: connection refused",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}
	if n := strings.Count(out, "status: "+short(source)); n != 5 {
		t.Errorf("status shows %d status commits, want the last 5:\n%s", n, out)
	}
	code, out, _ = berth(t, env, "status", "-o", "json")
	var report statusReport
	if err := json.Unmarshal([]byte(out), &report); err != nil || code != exitError {
		t.Fatalf("status -o json: code %d, %v:\n%s", code, err, out)
	}
	if report.Summary.Outcome != status.Progressing || report.Reconciled || report.BranchCommit != next || len(report.History) != 5 ||
		report.History[0].Message != "status: "+short(source)+" Progressing - 0/3 pods ready" || len(report.Summary.Unreachable) != 1 {
		t.Errorf("status -o json: %+v", report)
	}
	// get says the status is not Ready, on stderr, and still lists.
	code, out, errOut = berth(t, env, "get", "deploy")
	if code != exitOK || !strings.Contains(errOut, "Progressing") || !strings.Contains(out, "0/3") {
		t.Errorf("get deploy when Progressing: code %d, stdout %s, stderr %s", code, out, errOut)
	}

	// The next commit is broken: its status has no workloads; get shows
	// those of the commit still running, and says so.
	writeStatus(t, repo.Path(), status.Input{Commit: next, Problems: []string{"README.md:1: not a manifest"}, Running: source}, now)
	code, out, errOut = berth(t, env, "get", "deploy")
	wantErr := "berth: " + short(next) + " could not be applied (berth status says why); showing " + short(source) + ", the last commit that was\n"
	if code != exitOK || !strings.HasPrefix(errOut, wantErr) || !equalRows(fields(out), [][]string{{"NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"}, {"echo", "0/3", "3", "0", "5d"}}) {
		t.Errorf("get deploy when Failed: code %d, stdout:\n%s\nstderr: %s", code, out, errOut)
	}
	// The same from a clone: a URL's repository is cloned with every branch.
	code, out, errOut = berth(t, nil, "get", "deploy", "--repo", repo.URL())
	if code != exitOK || !strings.HasPrefix(errOut, wantErr) || !strings.Contains(out, "0/3") {
		t.Errorf("get deploy from a clone: code %d, stdout:\n%s\nstderr: %s", code, out, errOut)
	}
	code, out, _ = berth(t, env, "status")
	for _, want := range []string{"Outcome:   Failed", "Running:   " + source, "Problems:\n  README.md:1: not a manifest"} {
		if code != exitError || !strings.Contains(out, want) {
			t.Errorf("status when Failed: code %d, lacks %q:\n%s", code, want, out)
		}
	}
}

func equalRows(a, b [][]string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if strings.Join(a[i], "|") != strings.Join(b[i], "|") {
			return false
		}
	}
	return true
}

func TestStatusUsage(t *testing.T) {
	code, out, _ := berth(t, nil, "status", "--help")
	if code != exitOK || !strings.Contains(out, "Usage: berth status") || !strings.Contains(out, "Examples:") || !strings.Contains(out, "--status-branch") {
		t.Errorf("status --help: code %d:\n%s", code, out)
	}
	if code, _, errOut := berth(t, nil, "status"); code != exitUsage || !strings.Contains(errOut, "--repo") {
		t.Errorf("status without a repository: code %d, stderr %s", code, errOut)
	}
	if code, _, errOut := berth(t, nil, "status", "--repo", ".", "-o", "yaml"); code != exitUsage || !strings.Contains(errOut, "text or json") {
		t.Errorf("status -o yaml: code %d, stderr %s", code, errOut)
	}
	if code, _, errOut := berth(t, nil, "get", "replicasets", "--repo", "."); code != exitUsage || !strings.Contains(errOut, "cronjobs") {
		t.Errorf("get replicasets: code %d, stderr %s", code, errOut)
	}
}

// A fleet in a sub-folder of a monorepo: the status branch's files are at
// the repository's root, not under the sub-folder.
func TestStatusOfSubfolder(t *testing.T) {
	repo := gittest.New(t)
	source := repo.Commit(map[string]string{"fleet/app.yaml": deployment("nginx:1.27"), "README.md": "monorepo\n"}, "fleet")
	p := &live.Pass{Converged: true, Workloads: []live.WorkloadStatus{{Owner: workload.Owner{Kind: "Deployment", Namespace: "default", Name: "web"},
		Status: workload.Status{Replicas: 3, ReadyReplicas: 3, UpdatedReplicas: 3, AvailableReplicas: 3}}}}
	writeStatus(t, repo.Path(), status.Input{Commit: source, Pass: p}, time.Now().Add(-time.Hour))

	for _, dir := range []string{filepath.Join(repo.Path(), "fleet"), filepath.Join(repo.Path(), "fleet") + "/"} {
		code, out, errOut := berth(t, nil, "get", "deploy", "--repo", dir)
		if code != exitOK || errOut != "" || !equalRows(fields(out), [][]string{{"NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"}, {"web", "3/3", "3", "3", "60m"}}) {
			t.Errorf("get deploy --repo %s: code %d, stdout:\n%s\nstderr: %s", dir, code, out, errOut)
		}
		if code, out, errOut := berth(t, nil, "status", "--repo", dir); code != exitOK || !strings.Contains(out, "Outcome:   Ready") {
			t.Errorf("status --repo %s: code %d, stdout:\n%s\nstderr: %s", dir, code, out, errOut)
		}
	}
}
