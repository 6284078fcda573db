package main

import (
	"context"
	"fmt"
	"io"
	"testing"
	"time"

	"berth.dev/berth/reconciler/live"
	"berth.dev/berth/reconciler/status"
	"berth.dev/berth/reconciler/workload"
)

// BenchmarkStatusBranchRead measures get deployments -A and status on a
// status branch of 300 commits (a change in each, as a rollout makes)
// whose Deployments have been recorded since the first: the worst case of
// the walk that finds AGE.
func BenchmarkStatusBranchRead(b *testing.B) {
	repo, source := fleetRepo(b)
	start := time.Now().Add(-300 * time.Minute)
	for i := range 300 {
		p, obs := pass(true, true, "")
		p.Workloads[0].Status.Revision = int64(i + 1)
		for j := range 20 {
			p.Workloads = append(p.Workloads, live.WorkloadStatus{Owner: workload.Owner{Kind: "Deployment", Namespace: "default", Name: fmt.Sprintf("extra-%d", j)}})
		}
		writeStatus(b, repo.Path(), status.Input{Commit: source, Pass: p, Observed: obs}, start.Add(time.Duration(i)*time.Minute))
	}
	e := &env{stdout: io.Discard, stderr: io.Discard, getenv: func(string) string { return "" }}
	for _, args := range [][]string{{"get", "deployments", "-A"}, {"status"}} {
		b.Run(args[0], func(b *testing.B) {
			for b.Loop() {
				if code := run(context.Background(), append(args, "--repo", repo.Path()), e); code != exitOK {
					b.Fatalf("%v: exit %d", args, code)
				}
			}
		})
	}
}
