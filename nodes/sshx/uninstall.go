package sshx

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"berth.dev/berth/render/api/v1alpha1"
)

// DefaultDrainTimeout bounds how long a purge waits for the agent to stop
// its pods.
const DefaultDrainTimeout = 60 * time.Second

// UninstallOptions say how far Uninstall goes.
type UninstallOptions struct {
	// Purge also stops the agent's pods (through the agent, before it is
	// stopped) and removes its state and pod log directories. Without
	// it, pods keep running and their data stays, so that a later
	// bootstrap picks them up again.
	Purge bool
	// Init forces how the agent was run; InitAuto decides by PID 1.
	Init InitMode
	// StopTimeout bounds the wait for the agent to stop before it is
	// killed; DrainTimeout the wait for pods to stop on a purge.
	StopTimeout, DrainTimeout time.Duration
	// Logger receives one line per step; nil discards them.
	Logger *slog.Logger
}

// UninstallReport is what Uninstall did.
type UninstallReport struct {
	Machine string `json:"machine"`
	// Stopped says what happened to the agent: "stopped PID", "killed
	// PID" (it outlived StopTimeout), "not running", or the unit's stop.
	Stopped string `json:"stopped"`
	// PodsStopped is how many pods the agent ran before a purge.
	PodsStopped int `json:"podsStopped,omitempty"`
	// Removed lists the paths removed (those that existed).
	Removed []string `json:"removed"`
	// Warnings are what could not be done but did not stop the rest.
	Warnings []string `json:"warnings,omitempty"`
}

// Uninstall stops berth's agent on the machine and removes what bootstrap
// installed: the binary (and any partial upload), the systemd unit or the
// pidfile, the socket. Without Purge, pods keep running and the state and
// pod log directories stay. It is idempotent.
func Uninstall(ctx context.Context, conn *Conn, m *v1alpha1.Machine, opts UninstallOptions) (UninstallReport, error) {
	if m == nil {
		return UninstallReport{}, errors.New("uninstall: no machine")
	}
	rep := UninstallReport{Machine: m.Name}
	fail := func(step string, err error) (UninstallReport, error) {
		return rep, fmt.Errorf("uninstall %s: %s: %w", m.Name, step, err)
	}
	if conn.Machine() != m.Name {
		return fail("connect", fmt.Errorf("the connection is to machine %s", conn.Machine()))
	}
	paths, err := resolvePaths(m)
	if err != nil {
		return fail("check paths", err)
	}
	if opts.StopTimeout == 0 {
		opts.StopTimeout = DefaultStopTimeout
	}
	if opts.DrainTimeout == 0 {
		opts.DrainTimeout = DefaultDrainTimeout
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("component", "sshx", "machine", m.Name)
	run := func(script string) (string, error) {
		out, errb, code, err := conn.Run(ctx, script, nil)
		if err == nil && code != 0 {
			err = fmt.Errorf("exit status %d: %s", code, strings.TrimSpace(string(errb)))
		}
		return strings.TrimSpace(string(out)), err
	}

	out, err := run(probeScript(paths))
	if err != nil {
		return fail("probe machine", err)
	}
	f, err := parseFacts([]byte(out + "\n"))
	if err != nil {
		return fail("probe machine", err)
	}
	mode := opts.Init
	if mode == InitAuto {
		mode = InitDetached
		if f.Init == "systemd" {
			mode = InitSystemd
		}
	}

	if opts.Purge {
		n, err := drainPods(ctx, conn, paths.Socket, opts.DrainTimeout)
		switch {
		case err == nil:
			rep.PodsStopped = n
			log.Info("pods stopped", "step", "stop pods", "pods", n)
		case ctx.Err() != nil:
			return fail("stop pods", ctx.Err())
		default:
			w := fmt.Sprintf("the agent did not stop its pods (%v); containers it started may remain in containerd at %s", err, paths.Containerd)
			rep.Warnings = append(rep.Warnings, w)
			log.Warn("pods not stopped", "step", "stop pods", "error", err)
		}
	}

	stop := stopDetachedScript(paths, opts.StopTimeout)
	if mode == InitSystemd {
		u := Quote(unitName)
		stop = fmt.Sprintf(`if systemctl is-active --quiet %s; then systemctl disable --now %s >/dev/null 2>&1; echo "stopped unit"; else systemctl disable %s >/dev/null 2>&1; echo "not running"; fi
rm -f %s
systemctl daemon-reload
`, u, u, u, Quote(paths.Unit))
	}
	if rep.Stopped, err = run(stop); err != nil {
		return fail("stop agent", err)
	}
	log.Info("agent stopped", "step", "stop agent", "result", rep.Stopped)

	// The agent removes its socket when it stops; a killed one leaves it.
	remove := []string{paths.Binary, paths.Socket, paths.Socket + ".lock", paths.PIDFile, paths.Unit}
	var rm strings.Builder
	for _, p := range remove {
		fmt.Fprintf(&rm, "if [ -e %s ] || [ -L %s ]; then rm -f %s && echo %s; fi\n", Quote(p), Quote(p), Quote(p), Quote(p))
	}
	fmt.Fprintf(&rm, "for f in %s*; do [ -e \"$f\" ] && rm -f \"$f\" && printf '%%s\\n' \"$f\"; done; true\n", Quote(paths.Binary+".upload-"))
	if opts.Purge {
		for _, d := range []string{paths.StateDir, paths.LogDir} {
			fmt.Fprintf(&rm, "if [ -e %s ]; then rm -rf %s && echo %s; fi\n", Quote(d), Quote(d), Quote(d))
		}
	}
	out, err = run(rm.String())
	if out != "" {
		rep.Removed = strings.Split(out, "\n")
	}
	if err != nil {
		return fail("remove files", err)
	}
	log.Info("uninstalled", "step", "remove files", "removed", len(rep.Removed), "purge", opts.Purge)
	return rep, nil
}
