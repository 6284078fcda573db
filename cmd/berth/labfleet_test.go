package main

import (
	"strings"
	"testing"
	"time"

	"berth.dev/berth/nodes/lab"
	"berth.dev/berth/nodes/lab/labtest"
)

// labFleet is a lab of three machines with this tree's berth bootstrapped
// on each, for the end-to-end tests that drive the berth binary against it.
type labFleet struct {
	t   *testing.T
	lab *lab.Lab
	bin string
	// env points berth at the lab's repository, key and known_hosts.
	env map[string]string
}

// startLabFleet brings the lab up, builds berth with version and
// bootstraps every machine; the agents are uninstalled at the end.
func startLabFleet(t *testing.T, version string) *labFleet {
	t.Helper()
	l := labtest.Start(t, lab.Options{Nodes: 3})
	f := &labFleet{t: t, lab: l, bin: buildBerth(t, version),
		env: map[string]string{"BERTH_REPO": l.Repo, "BERTH_SSH_KEY": l.SSHKey, "BERTH_KNOWN_HOSTS": l.KnownHosts}}
	t.Cleanup(func() {
		for _, m := range l.Machines {
			berth(t, f.env, "machines", "uninstall", m.Name, "--purge")
		}
	})
	if code, _, _ := f.run("machines", "bootstrap", "--binary", f.bin); code != exitOK {
		t.Fatal("bootstrap failed")
	}
	return f
}

// run runs berth against the lab and logs what it said.
func (f *labFleet) run(args ...string) (int, string, string) {
	f.t.Helper()
	start := time.Now()
	code, out, errOut := berth(f.t, f.env, args...)
	f.t.Logf("berth %s: exit %d in %v\n%s%s", strings.Join(args, " "), code, time.Since(start).Round(time.Millisecond), out, errOut)
	return code, out, errOut
}
