package gitsource

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"berth.dev/berth/nodes/sshx/sshtest"
)

// Status and notes pushed over ssh to Debian's sshd and git-receive-pack,
// with the host key checked, and a conflict with a push by git itself
// rebuilt on top of it.
func TestPushOverSSH(t *testing.T) {
	src, head := sourceRepo(t)
	srv := sshtest.Start(t, sshtest.Options{})
	kh := filepath.Join(t.TempDir(), "known_hosts")
	if err := os.WriteFile(kh, []byte(srv.KnownHostsLine()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	url := "ssh://root@" + srv.Addr() + src.Path()
	r, err := Clone(ctx, CloneOptions{URL: url, SSHKeyPath: srv.ClientKeyFile, KnownHosts: kh})
	if err != nil {
		t.Fatal(err)
	}
	w := &statusWriter{r: r, name: "ssh", source: head, files: map[string][]byte{"summary.yaml": []byte("ready\n")}}
	if err := w.publish(ctx, fastRetries()); err != nil {
		t.Fatal(err)
	}
	dir := src.Path()
	if got := gitCLI(t, dir, "show", "berth/status:summary.yaml"); got != "ready" {
		t.Errorf("summary = %q", got)
	}

	// git moves the status branch; our next push conflicts and rebuilds.
	cli := t.TempDir()
	gitCLI(t, cli, "clone", "-q", "-b", "berth/status", dir, ".")
	gitCLI(t, cli, "commit", "-q", "--allow-empty", "-m", "cli")
	gitCLI(t, cli, "push", "-q", "origin", "berth/status")
	w.files["summary.yaml"] = []byte("degraded\n")
	if err := w.publish(ctx, fastRetries()); err != nil {
		t.Fatal(err)
	}
	if w.builds != 3 {
		t.Errorf("built %d times, want 3 (first push, second try, rebuild)", w.builds)
	}
	if got := gitCLI(t, dir, "log", "--format=%s", "berth/status"); got != "status: ssh\ncli\nstatus: ssh" {
		t.Errorf("status history:\n%s", got)
	}
	if got := gitCLI(t, dir, "notes", "--ref=berth", "show", head); got != "reconciled by ssh" {
		t.Errorf("note = %q", got)
	}
	fsckClean(t, dir)
}
