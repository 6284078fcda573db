package sshx

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path"
	"strconv"
	"strings"
	"time"

	"berth.dev/berth/nodes/agentclient"
	"berth.dev/berth/nodes/api"
	"berth.dev/berth/render/api/v1alpha1"
)

// ErrUploadCorrupt: the binary that arrived on the machine does not have
// the sha256 of the one sent; it was removed and nothing was replaced.
var ErrUploadCorrupt = errors.New("uploaded binary failed verification")

// Defaults of BootstrapOptions.
const (
	DefaultWaitTimeout = 30 * time.Second
	DefaultStopTimeout = 15 * time.Second
)

// BootstrapOptions say what to install on a machine and how.
type BootstrapOptions struct {
	// Machine is the machine to bootstrap; its name must be the Conn's.
	// The agent's paths come from its spec.agent (defaults when unset).
	Machine *v1alpha1.Machine
	// BinaryPath is the local berth binary to install: the controller's
	// own executable, or one built for the machines' platform.
	BinaryPath string
	// Version is the controller's version; the agent's should agree.
	Version string
	// APIVersion is the agent API version the controller speaks; empty
	// means api.Version.
	APIVersion string
	// Namespace is the agent's containerd namespace (--namespace); empty
	// leaves the agent's default.
	Namespace string
	// Registries are the Cluster document's registries (plain-HTTP hosts,
	// mirrors, CA files); when there are any, bootstrap writes them to
	// registries.json in the state directory and passes --registries.
	Registries []v1alpha1.Registry
	// AgentArgs are appended to the agent's command line.
	AgentArgs []string
	// Init forces how the agent is run; InitAuto (empty) decides by the
	// machine's PID 1.
	Init InitMode
	// WaitTimeout bounds the wait for the agent to answer once started;
	// StopTimeout the wait for an old agent to stop before it is killed.
	WaitTimeout, StopTimeout time.Duration
	// Logger receives one line per step; nil discards them.
	Logger *slog.Logger

	// uploadFilter, for tests, wraps the binary's reader on upload.
	uploadFilter func(io.Reader) io.Reader
}

// Validate reports what is wrong with o.
func (o BootstrapOptions) Validate() error {
	var errs []error
	if o.Machine == nil {
		return errors.New("no machine")
	}
	if o.Machine.Name == "" {
		errs = append(errs, errors.New("the machine has no name"))
	}
	if o.BinaryPath == "" {
		errs = append(errs, errors.New("no berth binary to install"))
	}
	if o.Version == "" {
		errs = append(errs, errors.New("no controller version"))
	}
	switch o.Init {
	case InitAuto, InitSystemd, InitDetached:
	default:
		errs = append(errs, fmt.Errorf("init mode %q is none of systemd, detached", o.Init))
	}
	if o.WaitTimeout < 0 || o.StopTimeout < 0 {
		errs = append(errs, errors.New("timeouts must not be negative"))
	}
	for _, a := range append([]string{o.Machine.Name, o.Namespace}, o.AgentArgs...) {
		if strings.ContainsFunc(a, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
			errs = append(errs, fmt.Errorf("agent argument %q holds a control character", a))
		}
	}
	if _, err := resolvePaths(o.Machine); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Report is what a bootstrap found and did.
type Report struct {
	Machine  string   `json:"machine"`
	Platform Platform `json:"platform"`
	Distro   string   `json:"distro,omitempty"`
	Kernel   string   `json:"kernel,omitempty"`
	Init     InitMode `json:"init"`

	Prerequisites []Prerequisite `json:"prerequisites"`

	// BinaryPath is where the binary is on the machine, SHA256 its
	// digest; Uploaded is whether this bootstrap sent it.
	BinaryPath string `json:"binaryPath"`
	SHA256     string `json:"sha256"`
	Uploaded   bool   `json:"uploaded"`
	// Action is what was done to the agent: installed, upgraded,
	// restarted, started, or unchanged.
	Action string `json:"action"`
	// Reason says why, when something was done.
	Reason string `json:"reason,omitempty"`
	// PreviousVersion is the version the agent answered with before, if
	// one answered.
	PreviousVersion string `json:"previousVersion,omitempty"`
	AgentVersion    string `json:"agentVersion"`
	AgentAPIVersion string `json:"agentAPIVersion"`
	// VersionAgreement says how the agent's version agrees with the
	// controller's.
	VersionAgreement string `json:"versionAgreement"`
	// PID is the agent's process (detached mode).
	PID      int           `json:"pid,omitempty"`
	Duration time.Duration `json:"duration"`
}

// Bootstrap installs, upgrades or restarts berth's agent on the machine
// that conn reaches, as needed, and returns once the agent answers with a
// version the controller agrees with. It is idempotent: on a machine that
// already runs the same binary with the same settings it only checks.
//
// In order: the local binary is read (sha256, platform); the machine is
// probed in one command (platform, distribution, init, tools, CNI plugins,
// nftables, containerd, what is installed and running); a platform
// mismatch is refused and every missing prerequisite reported at once;
// the binary is uploaded (unless the installed one has the same sha256)
// to a temporary file, verified with sha256sum on the machine and only
// then renamed into place; the agent is started, or restarted when its
// binary or command line changed or it does not answer (as a systemd unit
// where systemd is PID 1, otherwise detached with a pidfile); bootstrap
// waits for GET /v1/version on the agent's socket and checks the version.
// Pods keep running while the agent restarts; the new agent adopts them.
//
// Errors name the machine and the step: "bootstrap lab1: upload agent:
// ...". The Report is filled as far as bootstrap got.
func Bootstrap(ctx context.Context, conn *Conn, opts BootstrapOptions) (Report, error) {
	if opts.Machine == nil {
		return Report{}, errors.New("bootstrap: no machine")
	}
	name := opts.Machine.Name
	if err := opts.Validate(); err != nil {
		return Report{}, fmt.Errorf("bootstrap %s: %w", name, err)
	}
	if conn.Machine() != name {
		return Report{}, fmt.Errorf("bootstrap %s: the connection is to machine %s", name, conn.Machine())
	}
	paths, _ := resolvePaths(opts.Machine) // checked by Validate
	if opts.APIVersion == "" {
		opts.APIVersion = api.Version
	}
	if opts.WaitTimeout == 0 {
		opts.WaitTimeout = DefaultWaitTimeout
	}
	if opts.StopTimeout == 0 {
		opts.StopTimeout = DefaultStopTimeout
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	b := &bootstrap{
		conn:  conn,
		opts:  opts,
		paths: paths,
		log:   log.With("component", "sshx", "machine", name),
		rep:   Report{Machine: name, BinaryPath: paths.Binary},
	}
	start := time.Now()
	err := b.run(ctx)
	b.rep.Duration = time.Since(start)
	if err != nil {
		err = fmt.Errorf("bootstrap %s: %w", name, err)
		b.log.Error("bootstrap failed", "duration", b.rep.Duration.Round(time.Millisecond), "error", err)
		return b.rep, err
	}
	b.log.Info("bootstrap done", "action", b.rep.Action, "version", b.rep.AgentVersion, "uploaded", b.rep.Uploaded, "duration", b.rep.Duration.Round(time.Millisecond))
	return b.rep, nil
}

type bootstrap struct {
	conn  *Conn
	opts  BootstrapOptions
	paths agentPaths
	log   *slog.Logger
	rep   Report

	localSHA string
	facts    facts
}

// step runs one named step, logs it and names it in its error.
func (b *bootstrap) step(name string, f func() error) error {
	start := time.Now()
	b.log.Debug("bootstrap step", "step", name)
	if err := f(); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	b.log.Info("bootstrap step done", "step", name, "took", time.Since(start).Round(time.Millisecond))
	return nil
}

func (b *bootstrap) run(ctx context.Context) error {
	var local Platform
	if err := b.step("read binary", func() (err error) {
		b.localSHA, local, err = inspectBinary(b.opts.BinaryPath)
		return err
	}); err != nil {
		return err
	}
	if err := b.step("probe machine", func() error { return b.probe(ctx) }); err != nil {
		return err
	}
	f := b.facts
	b.rep.Platform, b.rep.Distro, b.rep.Kernel = f.Platform, f.Distro, f.Kernel
	if err := b.step("check platform", func() error {
		if f.Platform != local {
			return fmt.Errorf("%w: the machine is %s, %s is built for %s", ErrPlatformMismatch, f.Platform, b.opts.BinaryPath, local)
		}
		return nil
	}); err != nil {
		return err
	}
	b.rep.Init = b.opts.Init
	if b.rep.Init == InitAuto {
		b.rep.Init = InitDetached
		if f.Init == "systemd" {
			b.rep.Init = InitSystemd
		}
	}
	if err := b.step("check prerequisites", func() error {
		answers := false
		if nc, err := b.conn.DialUnix(ctx, b.paths.Containerd); err == nil {
			nc.Close()
			answers = true
		} else if ctx.Err() != nil {
			return ctx.Err()
		}
		b.rep.Prerequisites = checkPrerequisites(f, b.rep.Init, b.paths.Containerd, answers)
		return missingError(b.rep.Prerequisites)
	}); err != nil {
		return err
	}

	// What runs now, and whether it answers.
	answered := false
	if f.AgentPID > 0 || f.UnitActive == "active" {
		qctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		v, err := getAgentVersion(qctx, b.conn, b.paths.Socket)
		cancel()
		if err == nil {
			answered = true
			b.rep.PreviousVersion = v.Version
		} else if ctx.Err() != nil {
			return ctx.Err()
		}
	}

	b.rep.SHA256 = b.localSHA
	if f.InstalledSHA256 != b.localSHA {
		tmp := b.paths.Binary + ".upload-" + randomHex(6)
		if err := b.step("upload agent", func() error { return b.upload(ctx, tmp) }); err != nil {
			return err
		}
		if err := b.step("verify agent", func() error { return b.verify(ctx, tmp) }); err != nil {
			return err
		}
		b.rep.Uploaded = true
	}

	regChanged, err := b.registries(ctx)
	if err != nil {
		return err
	}
	args := agentArgs(b.paths, b.opts.Machine.Name, b.opts.Namespace, len(b.opts.Registries) > 0, b.opts.AgentArgs)
	switch b.rep.Init {
	case InitSystemd:
		err = b.ensureUnit(ctx, args, answered, regChanged)
	default:
		err = b.ensureDetached(ctx, args, answered, regChanged)
	}
	if err != nil {
		return err
	}

	var v agentclient.VersionInfo
	if err := b.step("wait for agent", func() (err error) {
		v, err = b.waitAgent(ctx)
		return err
	}); err != nil {
		return err
	}
	b.rep.AgentVersion, b.rep.AgentAPIVersion = v.Version, v.APIVersion
	return b.step("agree on version", func() (err error) {
		b.rep.VersionAgreement, err = agreeVersion(v, b.opts.Version, b.opts.APIVersion)
		return err
	})
}

// inspectBinary returns the sha256 of the local binary and the platform
// its ELF header says it is built for.
func inspectBinary(p string) (string, Platform, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", Platform{}, err
	}
	defer f.Close()
	ef, err := elf.NewFile(f)
	if err != nil {
		return "", Platform{}, fmt.Errorf("%s is not a Linux executable: %w", p, err)
	}
	plat, err := elfPlatform(ef)
	if err != nil {
		return "", Platform{}, fmt.Errorf("%s: %w", p, err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return "", Platform{}, err
	}
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", Platform{}, err
	}
	return hex.EncodeToString(h.Sum(nil)), plat, nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// script runs a /bin/sh script and turns a non-zero exit into an error
// carrying its stderr.
func (b *bootstrap) script(ctx context.Context, s string, stdin io.Reader) ([]byte, error) {
	out, errb, code, err := b.conn.Run(ctx, s, stdin)
	if err != nil {
		return out, err
	}
	if code != 0 {
		return out, fmt.Errorf("exit status %d: %s", code, strings.TrimSpace(truncate(string(errb), 2000)))
	}
	return out, nil
}

func (b *bootstrap) probe(ctx context.Context) error {
	out, err := b.script(ctx, probeScript(b.paths), nil)
	if err != nil {
		return err
	}
	b.facts, err = parseFacts(out)
	return err
}

// upload sends the binary to tmp beside its final path. Stale uploads
// (from a cut connection) are removed first. On failure tmp is removed
// when the connection still allows.
func (b *bootstrap) upload(ctx context.Context, tmp string) error {
	f, err := os.Open(b.opts.BinaryPath)
	if err != nil {
		return err
	}
	defer f.Close()
	var r io.Reader = f
	if b.opts.uploadFilter != nil {
		r = b.opts.uploadFilter(r)
	}
	s := fmt.Sprintf("set -e\numask 077\nmkdir -p %s\nrm -f %s*\ncat > %s\n",
		Quote(path.Dir(b.paths.Binary)), Quote(b.paths.Binary+".upload-"), Quote(tmp))
	if _, err := b.script(ctx, s, r); err != nil {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if _, _, _, rerr := b.conn.Run(cctx, "rm -f "+Quote(tmp), nil); rerr != nil {
			b.log.Warn("could not remove a partial upload; the next bootstrap will", "step", "upload agent", "path", tmp, "error", rerr)
		}
		return err
	}
	return nil
}

// verify checks the upload's sha256 on the machine and only then moves it
// into place; a mismatch removes it.
func (b *bootstrap) verify(ctx context.Context, tmp string) error {
	t := Quote(tmp)
	s := fmt.Sprintf(`h=$(sha256sum < %s | cut -c1-64)
if [ "$h" != %s ]; then rm -f %s; echo "$h"; exit 3; fi
set -e
chmod 0755 %s
sync %s 2>/dev/null || true
mv -f %s %s
`, t, b.localSHA, t, t, t, t, Quote(b.paths.Binary))
	out, errb, code, err := b.conn.Run(ctx, s, nil)
	switch {
	case err != nil:
		return err
	case code == 3:
		return fmt.Errorf("%w: sha256 on the machine %s, of %s %s; the upload was removed", ErrUploadCorrupt, strings.TrimSpace(string(out)), b.opts.BinaryPath, b.localSHA)
	case code != 0:
		return fmt.Errorf("exit status %d: %s", code, strings.TrimSpace(string(errb)))
	}
	return nil
}

// registries writes the agent's registries file when it differs from
// what the machine has (or removes it when there are none now), and says
// whether it changed.
func (b *bootstrap) registries(ctx context.Context) (bool, error) {
	var data []byte
	if len(b.opts.Registries) > 0 {
		var err error
		if data, err = json.MarshalIndent(b.opts.Registries, "", "  "); err != nil {
			return false, err
		}
		data = append(data, '\n')
	}
	sum := sha256.Sum256(data)
	switch {
	case data == nil && b.facts.RegistriesSHA256 == "":
		return false, nil
	case data != nil && b.facts.RegistriesSHA256 == hex.EncodeToString(sum[:]):
		return false, nil
	}
	p := Quote(b.paths.Registries)
	s := "rm -f " + p + "\n"
	var stdin io.Reader
	if data != nil {
		s = fmt.Sprintf("set -e\numask 077\nmkdir -p %s\ncat > %s.new\nmv -f %s.new %s\n", Quote(b.paths.StateDir), p, p, p)
		stdin = bytes.NewReader(data)
	}
	return true, b.step("write registries", func() error {
		_, err := b.script(ctx, s, stdin)
		return err
	})
}

// action names what happens to the agent, for the report.
func (b *bootstrap) action(running, exeCurrent bool) string {
	switch {
	case b.facts.InstalledSHA256 == "":
		return "installed"
	case b.rep.Uploaded || (running && !exeCurrent):
		return "upgraded"
	case !running:
		return "started"
	default:
		return "restarted"
	}
}

// ensureDetached starts the agent as a detached process, or restarts it
// when its binary or command line changed or it did not answer.
func (b *bootstrap) ensureDetached(ctx context.Context, args []string, answered, regChanged bool) error {
	f := b.facts
	running := f.AgentPID > 0
	exeCurrent := f.AgentExeSHA256 == b.localSHA
	var reasons []string
	if running {
		if regChanged {
			reasons = append(reasons, "its registries changed")
		}
		if !exeCurrent {
			reasons = append(reasons, "its binary changed")
		}
		if f.AgentArgsSHA256 != argsSHA256(args) {
			reasons = append(reasons, "its command line changed")
		}
		if !answered {
			reasons = append(reasons, "it did not answer on "+b.paths.Socket)
		}
		if len(reasons) == 0 {
			b.rep.Action, b.rep.PID = "unchanged", f.AgentPID
			return nil
		}
	} else {
		reasons = append(reasons, "it was not running")
		if f.StalePIDFile {
			reasons = append(reasons, "a stale pidfile was replaced")
		}
	}
	b.rep.Action = b.action(running, exeCurrent)
	b.rep.Reason = strings.Join(reasons, "; ")
	if running {
		if err := b.step("stop agent", func() error {
			out, err := b.script(ctx, stopDetachedScript(b.paths, b.opts.StopTimeout), nil)
			b.log.Info("old agent stopped", "step", "stop agent", "result", strings.TrimSpace(string(out)))
			return err
		}); err != nil {
			return err
		}
	}
	return b.step("start agent", func() error {
		out, err := b.script(ctx, startDetachedScript(b.paths, args), nil)
		if err != nil {
			return err
		}
		word, pid, _ := strings.Cut(lastLine(out), " ")
		b.rep.PID, _ = strconv.Atoi(pid)
		if word != "started" || b.rep.PID == 0 {
			return fmt.Errorf("unexpected answer %q", lastLine(out))
		}
		return nil
	})
}

// ensureUnit installs the systemd unit and (re)starts it as needed.
func (b *bootstrap) ensureUnit(ctx context.Context, args []string, answered, regChanged bool) error {
	f := b.facts
	unit := renderUnit(args)
	sum := sha256.Sum256([]byte(unit))
	unitChanged := f.UnitSHA256 != hex.EncodeToString(sum[:])
	running := f.UnitActive == "active"
	exeCurrent := f.UnitExeSHA256 == b.localSHA
	var reasons []string
	if unitChanged {
		reasons = append(reasons, "its unit changed")
	}
	if running && !exeCurrent {
		reasons = append(reasons, "its binary changed")
	}
	if running && !answered {
		reasons = append(reasons, "it did not answer on "+b.paths.Socket)
	}
	if running && regChanged {
		reasons = append(reasons, "its registries changed")
	}
	if !running {
		reasons = append(reasons, "it was not running (systemd: "+f.UnitActive+")")
	}
	if len(reasons) == 0 {
		b.rep.Action = "unchanged"
		return nil
	}
	b.rep.Action = b.action(running, exeCurrent)
	b.rep.Reason = strings.Join(reasons, "; ")
	restart := running
	return b.step("start agent", func() error {
		_, err := b.script(ctx, installUnitScript(b.paths, restart), strings.NewReader(unit))
		return err
	})
}

// waitAgent polls GET /v1/version until the agent answers. A detached
// agent that died meanwhile ends the wait at once; either way, an error
// carries the end of the agent's log.
func (b *bootstrap) waitAgent(ctx context.Context) (agentclient.VersionInfo, error) {
	ctx, cancel := context.WithTimeout(ctx, b.opts.WaitTimeout)
	defer cancel()
	delay := 20 * time.Millisecond
	lastCheck := time.Now()
	for {
		actx, acancel := context.WithTimeout(ctx, 5*time.Second)
		v, err := getAgentVersion(actx, b.conn, b.paths.Socket)
		acancel()
		if err == nil {
			return v, nil
		}
		if b.rep.Init == InitDetached && b.rep.PID > 0 && time.Since(lastCheck) > time.Second {
			lastCheck = time.Now()
			out, _, _, cerr := b.conn.Run(ctx, agentCheckFunc(b.paths)+fmt.Sprintf("ours %d && echo alive || echo dead\n", b.rep.PID), nil)
			if cerr == nil && lastLine(out) == "dead" {
				return agentclient.VersionInfo{}, fmt.Errorf("the agent (pid %d) exited: %s", b.rep.PID, b.agentLogTail())
			}
		}
		select {
		case <-ctx.Done():
			if ctx.Err() == context.DeadlineExceeded {
				return agentclient.VersionInfo{}, fmt.Errorf("no answer on %s within %v (%v): %s", b.paths.Socket, b.opts.WaitTimeout, err, b.agentLogTail())
			}
			return agentclient.VersionInfo{}, ctx.Err()
		case <-time.After(delay):
		}
		delay = min(2*delay, 500*time.Millisecond)
	}
}

// agentLogTail is the end of the agent's log, for an error.
func (b *bootstrap) agentLogTail() string {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	cmd := "tail -n 20 " + Quote(b.paths.LogFile) + " 2>&1"
	if b.rep.Init == InitSystemd {
		cmd = "journalctl -u " + Quote(unitName) + " -n 20 --no-pager 2>&1"
	}
	out, _, _, err := b.conn.Run(ctx, cmd, nil)
	if err != nil {
		return "its log could not be read: " + err.Error()
	}
	return "its log ends:\n" + strings.TrimRight(string(out), "\n")
}

func lastLine(b []byte) string {
	s := strings.TrimRight(string(b), "\n")
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		s = s[i+1:]
	}
	return strings.TrimSpace(s)
}
