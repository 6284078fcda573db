package gitsource

import (
	"berth.dev/berth/internal/testenv"

	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"berth.dev/berth/internal/gittest"
)

// sshGitServer is a loopback ssh server that serves one repository with
// git-upload-pack to one client key.
type sshGitServer struct {
	addr    string
	hostKey ssh.PublicKey
	execs   atomic.Int32 // git commands started
}

func newKey(t *testing.T) (ed25519.PrivateKey, ssh.Signer) {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return priv, signer
}

func startSSHGitServer(t *testing.T, repoDir string, client ssh.PublicKey) *sshGitServer {
	t.Helper()
	testenv.Require(t, "git")
	_, hostSigner := newKey(t)
	cfg := &ssh.ServerConfig{
		PublicKeyCallback: func(_ ssh.ConnMetadata, k ssh.PublicKey) (*ssh.Permissions, error) {
			if bytes.Equal(k.Marshal(), client.Marshal()) {
				return nil, nil
			}
			return nil, errors.New("unknown client key")
		},
	}
	cfg.AddHostKey(hostSigner)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	s := &sshGitServer{addr: ln.Addr().String(), hostKey: hostSigner.PublicKey()}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go s.serve(c, cfg, repoDir)
		}
	}()
	return s
}

func (s *sshGitServer) serve(c net.Conn, cfg *ssh.ServerConfig, repoDir string) {
	defer c.Close()
	_, chans, reqs, err := ssh.NewServerConn(c, cfg)
	if err != nil {
		return
	}
	go ssh.DiscardRequests(reqs)
	for nc := range chans {
		if nc.ChannelType() != "session" {
			_ = nc.Reject(ssh.UnknownChannelType, "session only")
			continue
		}
		ch, chReqs, err := nc.Accept()
		if err != nil {
			return
		}
		go func() {
			defer ch.Close()
			for req := range chReqs {
				if req.Type != "exec" || len(req.Payload) < 4 {
					_ = req.Reply(false, nil)
					continue
				}
				cmd := string(req.Payload[4:])
				ok := strings.HasPrefix(cmd, "git-upload-pack ") &&
					strings.Trim(strings.TrimPrefix(cmd, "git-upload-pack "), "'") == repoDir
				_ = req.Reply(ok, nil)
				if !ok {
					return
				}
				s.execs.Add(1)
				git := exec.Command("git", "upload-pack", repoDir)
				git.Stdin, git.Stdout, git.Stderr = ch, ch, ch.Stderr()
				status := uint32(0)
				if err := git.Run(); err != nil {
					status = 1
				}
				_ = ch.CloseWrite()
				_, _ = ch.SendRequest("exit-status", false, binary.BigEndian.AppendUint32(nil, status))
				return
			}
		}()
	}
}

func writeFile(t *testing.T, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestCloneSSHHostKeyChecking(t *testing.T) {
	src := gittest.NewBare(t)
	head := src.Commit(map[string]string{"app.yaml": "v1"}, "one")
	clientPriv, clientSigner := newKey(t)
	srv := startSSHGitServer(t, src.Path(), clientSigner.PublicKey())

	block, err := ssh.MarshalPrivateKey(clientPriv, "")
	if err != nil {
		t.Fatal(err)
	}
	keyPath := writeFile(t, "id_ed25519", pem.EncodeToMemory(block))
	_, otherHost := newKey(t)
	host := knownhosts.Normalize(srv.addr)
	url := "ssh://git@" + srv.addr + src.Path()

	tests := []struct {
		name       string
		knownHosts string
		want       string // error substring; "" for success
	}{
		{name: "pinned key", knownHosts: knownhosts.Line([]string{host}, srv.hostKey)},
		{name: "key mismatch", knownHosts: knownhosts.Line([]string{host}, otherHost.PublicKey()), want: "mismatch"},
		{name: "unknown host", knownHosts: knownhosts.Line([]string{"[192.0.2.1]:22"}, srv.hostKey), want: "unknown"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := srv.execs.Load()
			kh := writeFile(t, "known_hosts", []byte(tt.knownHosts+"\n"))
			r, err := Clone(context.Background(), CloneOptions{URL: url, SSHKeyPath: keyPath, KnownHosts: kh})
			if tt.want != "" {
				if err == nil || !strings.Contains(err.Error(), tt.want) {
					t.Fatalf("Clone = %v, want an error containing %q", err, tt.want)
				}
				if testing.Verbose() {
					t.Logf("error: %v", err)
				}
				if srv.execs.Load() != before {
					t.Fatalf("git ran on a server whose host key was not trusted")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := mustResolve(t, r, "HEAD"); got != head {
				t.Fatalf("HEAD = %s, want %s", got, head)
			}
			if err := r.Fetch(context.Background()); err != nil {
				t.Fatalf("Fetch over ssh: %v", err)
			}
		})
	}
}
