package lab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/remotes/docker"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/vishvananda/netlink"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"berth.dev/berth/examples/images"
	"berth.dev/berth/gitsource"
	"berth.dev/berth/internal/testenv"
)

// requireLab skips (or under BERTH_E2E=required fails) a test that needs
// root and the Debian programs a lab runs.
func requireLab(t *testing.T, withImages bool) {
	t.Helper()
	testenv.RequireRoot(t)
	testenv.Require(t, "sshd", "containerd", "containerd-shim-runc-v2", "runc", "docker-registry")
	if withImages {
		testenv.Require(t, "go", "busybox")
	}
}

// testLogger logs to the test.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// upForTest brings a lab up in a fresh directory and registers a Down for
// the end of the test, however it ends.
func upForTest(t *testing.T, opts Options) (*Lab, time.Duration) {
	t.Helper()
	if opts.Dir == "" {
		opts.Dir = t.TempDir()
	}
	opts.Logger = testLogger(t)
	t.Cleanup(func() {
		if _, err := Down(context.Background(), opts.Dir); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	began := time.Now()
	l, err := Up(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	return l, time.Since(began)
}

func TestLabEndToEnd(t *testing.T) {
	requireLab(t, true)
	ctx := context.Background()
	l, upTook := upForTest(t, Options{Nodes: 2})
	t.Logf("timing: lab up with 2 machines and the echo images: %v", upTook)

	signer := labSigner(t, l)
	for _, m := range l.Machines {
		t.Run("machine "+m.Name, func(t *testing.T) {
			out := sshRun(t, m, signer, "ip -4 -o addr show dev eth0; hostname -I; echo $BERTH_LAB_MACHINE; echo HOME=$HOME")
			for _, want := range []string{m.Address.String(), m.Name, "HOME=" + m.Home()} {
				if !strings.Contains(out, want) {
					t.Errorf("%s says:\n%s\nwant %s in it", m.Name, out, want)
				}
			}
			// From inside the machine: the registry on the bridge
			// address holds both echo tags, and every other machine's
			// sshd answers.
			probe := "exec 3<>/dev/tcp/198.18.0.1/5000 && printf 'GET /v2/berth/echo/tags/list HTTP/1.0\\r\\n\\r\\n' >&3 && cat <&3"
			for _, o := range l.Machines {
				if o.Name != m.Name {
					probe += fmt.Sprintf("; (exec 4<>/dev/tcp/%s/22 && head -c 8 <&4 && echo)", o.Address.Addr())
				}
			}
			out = sshRun(t, m, signer, "bash -c "+shellQuote(probe))
			if !strings.Contains(out, `"tags":["1","2"]`) && !strings.Contains(out, `"tags":["2","1"]`) {
				t.Errorf("registry from %s:\n%s", m.Name, out)
			}
			if strings.Count(out, "SSH-2.0") != len(l.Machines)-1 {
				t.Errorf("other machines' sshd from %s:\n%s", m.Name, out)
			}
			// Routes: the default route through the bridge, the other
			// machines' pod CIDRs through their addresses.
			out = sshRun(t, m, signer, "ip -4 route")
			if !strings.Contains(out, "default via 198.18.0.1 dev eth0") {
				t.Errorf("routes of %s:\n%s", m.Name, out)
			}
			for _, o := range l.Machines {
				if o.Name != m.Name && !strings.Contains(out, o.PodCIDR.String()+" via "+o.Address.Addr().String()) {
					t.Errorf("routes of %s lack %s:\n%s", m.Name, o.PodCIDR, out)
				}
			}
			v, err := containerdVersion(ctx, m.Containerd.Address)
			if err != nil {
				t.Fatalf("containerd: %v", err)
			}
			t.Logf("%s: containerd %s", m.Name, v)
		})
	}

	t.Run("host routes", func(t *testing.T) {
		routes, err := netlink.RouteList(nil, netlink.FAMILY_V4)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range l.Machines {
			found := false
			for _, r := range routes {
				if r.Dst != nil && r.Dst.String() == m.PodCIDR.String() && r.Gw.String() == m.Address.Addr().String() {
					found = true
				}
			}
			if !found {
				t.Errorf("no host route to %s via %s", m.PodCIDR, m.Address.Addr())
			}
		}
	})

	// A running container in lab1's containerd, pulled from the lab
	// registry, so that Down has a shim, a runc container, a cgroup and a
	// root filesystem mount to clean up.
	t.Run("container", func(t *testing.T) {
		m := l.Machines[0]
		cl, err := client.New(m.Containerd.Address)
		if err != nil {
			t.Fatal(err)
		}
		defer cl.Close()
		nctx := namespaces.WithNamespace(ctx, m.Agent.Namespace)
		resolver := docker.NewResolver(docker.ResolverOptions{
			Hosts: docker.ConfigureDefaultRegistries(docker.WithPlainHTTP(docker.MatchAllHosts)),
		})
		ref := images.EchoRef(l.Registry, "1")
		began := time.Now()
		img, err := cl.Pull(nctx, ref, client.WithResolver(resolver), client.WithPullUnpack, client.WithPullSnapshotter("overlayfs"))
		if err != nil {
			t.Fatalf("pull %s: %v", ref, err)
		}
		t.Logf("timing: pull and unpack %s into %s: %v", ref, m.Name, time.Since(began))
		ctr, err := cl.NewContainer(nctx, "echo", client.WithImage(img), client.WithSnapshotter("overlayfs"),
			client.WithNewSnapshot("echo-rootfs", img), client.WithNewSpec(oci.WithImageConfig(img)))
		if err != nil {
			t.Fatal(err)
		}
		task, err := ctr.NewTask(nctx, cio.NullIO)
		if err != nil {
			t.Fatal(err)
		}
		if err := task.Start(nctx); err != nil {
			t.Fatal(err)
		}
		// Left running on purpose.
	})

	t.Run("repository", func(t *testing.T) {
		repo, err := gitsource.Open(ctx, l.Repo)
		if err != nil {
			t.Fatal(err)
		}
		defer repo.Close()
		snap, err := repo.Snapshot(ctx, Branch)
		if err != nil {
			t.Fatal(err)
		}
		checkFleet(t, snap, l)
	})

	t.Run("lab.env and known_hosts", func(t *testing.T) {
		env, err := os.ReadFile(l.Env)
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{"BERTH_REPO=" + l.Repo, "BERTH_SSH_KEY=" + l.SSHKey, "BERTH_KNOWN_HOSTS=" + l.KnownHosts} {
			if !strings.Contains(string(env), "export "+want+"\n") {
				t.Errorf("lab.env lacks %s:\n%s", want, env)
			}
		}
		if fi, err := os.Stat(l.SSHKey); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("client key: %v %v", fi.Mode(), err)
		}
		cb, err := knownhosts.New(l.KnownHosts)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range l.Machines {
			key, _, _, _, err := ssh.ParseAuthorizedKey([]byte(m.HostKey))
			if err != nil {
				t.Fatal(err)
			}
			addr := &net.TCPAddr{IP: m.Address.Addr().AsSlice(), Port: SSHPort}
			if err := cb(m.SSHAddr(), addr, key); err != nil {
				t.Errorf("known_hosts for %s: %v", m.Name, err)
			}
		}
	})

	t.Run("status", func(t *testing.T) {
		r, err := Status(ctx, l.Dir)
		if err != nil {
			t.Fatal(err)
		}
		var b bytes.Buffer
		r.WriteText(&b)
		t.Logf("status:\n%s", b.String())
		if !r.Healthy() {
			t.Error("lab not healthy")
		}
	})

	t.Run("up again", func(t *testing.T) {
		_, err := Up(ctx, Options{Nodes: 1, Dir: l.Dir})
		if !errors.Is(err, ErrExists) {
			t.Errorf("up on an existing lab: %v, want ErrExists", err)
		}
		_, err = Up(ctx, Options{Nodes: 1, Dir: t.TempDir()})
		if !errors.Is(err, ErrExists) {
			t.Errorf("a second lab elsewhere: %v, want ErrExists", err)
		}
	})

	began := time.Now()
	r, err := Down(ctx, l.Dir, WithLogger(testLogger(t)))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("timing: lab down: %v (removed %d processes, namespaces %v, links %v, %d mounts)", time.Since(began), r.Processes, r.Namespaces, r.Links, r.Mounts)
	assertGone(t, l.Dir, l.RunDir)

	r, err = Down(ctx, l.Dir)
	if err != nil {
		t.Fatalf("second down: %v", err)
	}
	if r.Processes != 0 || len(r.Namespaces) != 0 || len(r.Links) != 0 || r.Mounts != 0 || r.Dir {
		t.Errorf("second down removed %+v", r)
	}
	if _, err := Status(ctx, l.Dir); !errors.Is(err, ErrNotFound) {
		t.Errorf("status after down: %v, want ErrNotFound", err)
	}
}

// labSigner reads the lab's client key.
func labSigner(t *testing.T, l *Lab) ssh.Signer {
	t.Helper()
	b, err := os.ReadFile(l.SSHKey)
	if err != nil {
		t.Fatal(err)
	}
	s, err := ssh.ParsePrivateKey(b)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// sshRun runs cmd on m as root, checking m's pinned host key.
func sshRun(t *testing.T, m Machine, signer ssh.Signer, cmd string) string {
	t.Helper()
	hostKey, _, _, _, err := ssh.ParseAuthorizedKey([]byte(m.HostKey))
	if err != nil {
		t.Fatal(err)
	}
	began := time.Now()
	defer func() { t.Logf("ssh %s %q: %v", m.Name, cmd, time.Since(began)) }()
	c, err := ssh.Dial("tcp", m.SSHAddr(), &ssh.ClientConfig{
		User:            "root",
		Auth:            []ssh.AuthMethod{ssh.PublicKeys(signer)},
		HostKeyCallback: ssh.FixedHostKey(hostKey),
		Timeout:         5 * time.Second,
	})
	if err != nil {
		t.Fatalf("ssh %s: %v", m.Name, err)
	}
	defer c.Close()
	s, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	out, err := s.CombinedOutput(cmd)
	if err != nil {
		t.Fatalf("ssh %s %q: %v\n%s", m.Name, cmd, err, out)
	}
	return string(out)
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// assertGone checks that nothing of a lab is left: namespaces, links,
// processes, mounts, files, containerd's runc state and cgroups.
func assertGone(t *testing.T, dir, runDir string) {
	t.Helper()
	if names, _ := filepath.Glob("/run/netns/" + Prefix + "*"); len(names) > 0 {
		t.Errorf("namespaces left: %v", names)
	}
	links, err := netlink.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range links {
		if strings.HasPrefix(l.Attrs().Name, Prefix) {
			t.Errorf("link left: %s", l.Attrs().Name)
		}
	}
	if procs := labProcesses([]string{dir, runDir}, nil); len(procs) > 0 {
		t.Errorf("processes left: %+v", procs)
	}
	mounts, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(mounts), "\n") {
		if strings.Contains(line, dir) || strings.Contains(line, runDir) || strings.Contains(line, "/run/netns/"+Prefix) {
			t.Errorf("mount left: %s", line)
		}
	}
	for _, p := range []string{dir, runDir} {
		if _, err := os.Lstat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s left (%v)", p, err)
		}
	}
	for i := 1; i <= MaxNodes; i++ {
		ns := Namespace(i)
		left, _ := filepath.Glob("/sys/fs/cgroup/*/" + ns)
		if _, err := os.Stat(filepath.Join(defaultRuncRoot, ns)); err == nil {
			left = append(left, filepath.Join(defaultRuncRoot, ns))
		}
		if len(left) > 0 {
			t.Errorf("containerd leftovers of %s: %v", ns, left)
		}
	}
}

// TestDownAfterCrash kills the process running Up at several points and
// checks that Down still removes everything.
func TestDownAfterCrash(t *testing.T) {
	requireLab(t, false)
	if os.Getenv(helperEnv) != "" {
		t.Skip("helper")
	}
	// After how many recorded processes the helper is killed: 0 while the
	// network is being made, then while the machines start.
	for _, after := range []int{0, 3} {
		t.Run(fmt.Sprintf("after %d processes", after), func(t *testing.T) {
			dir := t.TempDir()
			t.Cleanup(func() { Down(context.Background(), dir) })
			cmd := exec.Command(os.Args[0], "-test.run=^TestUpHelper$", "-test.v")
			cmd.Env = append(os.Environ(), helperEnv+"="+dir)
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			// Kill it once the record shows enough made.
			deadline := time.Now().Add(2 * time.Minute)
			for {
				st, err := readState(dir)
				if err == nil && (len(st.Made.Links) > 0 && len(st.Made.Processes) >= after) {
					break
				}
				if time.Now().After(deadline) {
					cmd.Process.Kill()
					cmd.Wait()
					t.Fatalf("helper made too little in time:\n%s", out.String())
				}
				time.Sleep(time.Millisecond)
			}
			cmd.Process.Signal(syscall.SIGKILL)
			cmd.Wait()
			st, err := readState(dir)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("killed Up with %d namespaces, %d links, %d processes recorded", len(st.Made.Namespaces), len(st.Made.Links), len(st.Made.Processes))
			// One of its daemons dies too.
			for _, p := range st.Made.Processes {
				if strings.HasPrefix(p.Name, "sshd-") {
					p.signal(syscall.SIGKILL)
					break
				}
			}
			r, err := Down(context.Background(), dir, WithLogger(testLogger(t)))
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("removed %+v", r)
			assertGone(t, dir, st.Lab.RunDir)
		})
	}
}

const helperEnv = "BERTH_LAB_TEST_HELPER_DIR"

// TestUpHelper runs Up for TestDownAfterCrash, which kills it half-way.
func TestUpHelper(t *testing.T) {
	dir := os.Getenv(helperEnv)
	if dir == "" {
		t.Skip("run by TestDownAfterCrash")
	}
	_, err := Up(context.Background(), Options{Nodes: 2, Dir: dir, SkipImages: true, Logger: testLogger(t)})
	t.Logf("up: %v", err)
	select {} // wait to be killed
}

// TestDownWithoutRecord removes a lab whose lab.json is gone or corrupt,
// by its naming conventions.
func TestDownWithoutRecord(t *testing.T) {
	requireLab(t, false)
	for _, damage := range []string{"missing", "corrupt"} {
		t.Run(damage, func(t *testing.T) {
			l, _ := upForTest(t, Options{Nodes: 2, SkipImages: true})
			p := filepath.Join(l.Dir, stateFile)
			var err error
			if damage == "missing" {
				err = os.Remove(p)
			} else {
				err = os.WriteFile(p, []byte(`{"version": 1, "lab": {"dir": "elsewhere"`), 0o644)
			}
			if err != nil {
				t.Fatal(err)
			}
			began := time.Now()
			r, err := Down(context.Background(), l.Dir, WithLogger(testLogger(t)))
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("timing: down by conventions: %v (%+v)", time.Since(began), r)
			// The machines' veth pairs may go with their namespaces
			// before Down gets to them; the bridge may not.
			if r.Processes < 2*len(l.Machines)+1 || len(r.Namespaces) != len(l.Machines) || !slices.Contains(r.Links, BridgeName) {
				t.Errorf("removed %+v", r)
			}
			assertGone(t, l.Dir, l.RunDir)
		})
	}
}

// TestUpRefusesUsedAddresses checks Up leaves a host alone whose
// 198.18.0.0/24 is taken by a link the lab did not make.
func TestUpRefusesUsedAddresses(t *testing.T) {
	requireLab(t, false)
	la := netlink.NewLinkAttrs()
	la.Name = "berthtest0"
	dummy := &netlink.Bridge{LinkAttrs: la}
	if err := netlink.LinkAdd(dummy); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { netlink.LinkDel(dummy) })
	if err := noIPv6("", la.Name); err != nil {
		t.Fatal(err)
	}
	if err := netlink.AddrAdd(dummy, &netlink.Addr{IPNet: ipNet(netip.MustParsePrefix("198.18.0.99/24"))}); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	_, err := Up(context.Background(), Options{Nodes: 1, Dir: dir, SkipImages: true})
	if !errors.Is(err, ErrAddressInUse) || !strings.Contains(err.Error(), "berthtest0") {
		t.Errorf("got %v, want ErrAddressInUse naming berthtest0", err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) > 0 {
		t.Errorf("up left %d files in %s", len(ents), dir)
	}
}
