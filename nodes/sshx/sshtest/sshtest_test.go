package sshtest

import (
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

func dial(t *testing.T, s *Server) *ssh.Client {
	t.Helper()
	c, err := ssh.Dial("tcp", s.Addr(), &ssh.ClientConfig{
		User:            "root",
		Auth:            []ssh.AuthMethod{ssh.PublicKeys(s.ClientSigner)},
		HostKeyCallback: ssh.FixedHostKey(s.HostKey),
		Timeout:         5 * time.Second,
	})
	if err != nil {
		t.Fatalf("dial: %v\n%s", err, s.Log())
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func run(t *testing.T, c *ssh.Client, cmd string) string {
	t.Helper()
	sess, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	out, err := sess.CombinedOutput(cmd)
	if err != nil {
		t.Fatalf("%s: %v: %s", cmd, err, out)
	}
	return strings.TrimSpace(string(out))
}

func TestServer(t *testing.T) {
	s := Start(t, Options{Env: map[string]string{"PATH": "/usr/bin:/bin", "BERTH_TEST": "a b"}})
	c := dial(t, s)
	if got := run(t, c, "id -u"); got != "0" {
		t.Errorf("id -u = %q, want 0", got)
	}
	if got := run(t, c, `echo "$PATH|$BERTH_TEST|$HOME"`); got != "/usr/bin:/bin|a b|"+s.Dir {
		t.Errorf("environment = %q, want the SetEnv values", got)
	}
	if n := s.Sessions(); n == 0 {
		t.Errorf("Sessions() = 0 with a connection open")
	}
	s.Kill()
	if _, _, err := c.SendRequest("keepalive@openssh.com", true, nil); err == nil {
		t.Errorf("request on a connection to a killed sshd succeeded")
	}
	s.Restart()
	c2 := dial(t, s)
	if got := run(t, c2, "echo back"); got != "back" {
		t.Errorf("after Restart: %q", got)
	}
	if !strings.Contains(s.Log(), "Accepted publickey for root") {
		t.Errorf("log lacks the accepted login:\n%s", s.Log())
	}
}
