package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"berth.dev/berth/nodes/agentclient"
	"berth.dev/berth/nodes/api"
	nodefleet "berth.dev/berth/nodes/fleet"
)

const execHelp = `
Run a command in a running container of a pod, as kubectl exec does. The
pod is found on whichever machine runs it (every agent is asked over SSH).
Exits with the command's exit status.

Examples:
  berth exec echo-5d8f9-abcde -- cat /etc/echo/banner.txt
  berth exec -n shop -c app web-0 -- wget -qO- http://api.shop.svc.cluster.local/
  berth exec -it echo-5d8f9-abcde -- sh
`

const logsHelp = `
Print a container's log, as kubectl logs does: the pod is found on
whichever machine runs it. --previous gives the log of the container's
previous instance (after a restart).

Examples:
  berth logs echo-5d8f9-abcde
  berth logs -f --tail 20 -n shop -c app web-0
  berth logs --previous --since 10m echo-5d8f9-abcde
`

// podFlags are the flags of exec and logs.
type podFlags struct {
	o         machinesOpts
	namespace string
	container string
}

func (p *podFlags) register(fs *flag.FlagSet, e *env) {
	fleetFlags(fs, e, &p.o, "`branch` of the fleet repository (for its machines)")
	fs.StringVar(&p.namespace, "n", "default", "`namespace` of the pod")
	fs.StringVar(&p.container, "c", "", "`container` (default: the pod's only app container)")
}

// findPod returns the agent client of the machine running namespace/name.
func findPod(ctx context.Context, e *env, p podFlags, name string) (*agentclient.Client, func(), error) {
	if p.o.repo == "" {
		return nil, nil, errors.New("no fleet repository: give --repo or set BERTH_REPO")
	}
	f, err := loadFleet(ctx, e, p.o)
	if err != nil {
		return nil, nil, err
	}
	fl, err := nodefleet.New(f.machines, nodefleet.Options{SSH: f.ssh, Logger: f.log})
	if err != nil {
		return nil, nil, err
	}
	obs, err := fl.Observe(ctx)
	if err != nil {
		fl.Close()
		return nil, nil, err
	}
	var down []string
	for _, o := range obs {
		if !o.Reachable {
			down = append(down, o.Machine)
			continue
		}
		for _, ps := range o.Pods {
			if ps.Namespace == p.namespace && ps.Name == name {
				c, err := fl.Client(o.Machine)
				if err != nil {
					fl.Close()
					return nil, nil, err
				}
				return c, func() { fl.Close() }, nil
			}
		}
	}
	fl.Close()
	if len(down) > 0 {
		return nil, nil, fmt.Errorf("pod %s/%s not found on the machines that answered (%v did not)", p.namespace, name, down)
	}
	return nil, nil, fmt.Errorf("pod %s/%s not found on any machine", p.namespace, name)
}

func runExec(ctx context.Context, e *env, args []string) int {
	fs := newFlags(e, "exec", "[flags] POD -- COMMAND [ARG...]", execHelp)
	var p podFlags
	p.register(fs, e)
	stdin := fs.Bool("i", false, "pass stdin to the command")
	tty := fs.Bool("t", false, "allocate a terminal (with -i: an interactive shell)")
	fs.BoolVar(stdin, "stdin", false, "same as -i")
	fs.BoolVar(tty, "tty", false, "same as -t")
	timeout := fs.Duration("timeout", 0, "end the command after this long (0: never)")
	if code, stop := parse(e, fs, args); stop {
		return code
	}
	rest := fs.Args()
	if len(rest) < 2 {
		fmt.Fprintln(e.stderr, "berth exec: give a pod and a command: berth exec POD -- COMMAND [ARG...]")
		return exitUsage
	}
	pod, cmd := rest[0], rest[1:]
	if cmd[0] == "--" {
		cmd = cmd[1:]
	}
	if len(cmd) == 0 {
		fmt.Fprintln(e.stderr, "berth exec: no command after --")
		return exitUsage
	}
	c, done, err := findPod(ctx, e, p, pod)
	if err != nil {
		return fail(e, "exec: %v", err)
	}
	defer done()
	req := api.ExecRequest{Pod: p.namespace + "/" + pod, Container: p.container, Command: cmd, TTY: *tty, Stdout: e.stdout, Stderr: e.stderr, Timeout: *timeout}
	if *stdin {
		req.Stdin = os.Stdin
	}
	if *tty {
		restore, resize, err := rawTerminal(ctx, int(os.Stdin.Fd()))
		if err != nil {
			return fail(e, "exec: -t: %v", err)
		}
		defer restore()
		req.Resize = resize
	}
	code, err := c.Exec(ctx, req)
	if err != nil {
		return fail(e, "exec: %v", err)
	}
	return code
}

// rawTerminal puts the terminal fd in raw mode (the remote one does the
// echoing and line editing) and sends its size now and on every SIGWINCH.
func rawTerminal(ctx context.Context, fd int) (restore func(), resize <-chan api.TermSize, err error) {
	old, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		return nil, nil, fmt.Errorf("stdin is not a terminal: %w", err)
	}
	raw := *old
	raw.Iflag &^= unix.IGNBRK | unix.BRKINT | unix.PARMRK | unix.ISTRIP | unix.INLCR | unix.IGNCR | unix.ICRNL | unix.IXON
	raw.Oflag &^= unix.OPOST
	raw.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.ISIG | unix.IEXTEN
	raw.Cflag &^= unix.CSIZE | unix.PARENB
	raw.Cflag |= unix.CS8
	raw.Cc[unix.VMIN], raw.Cc[unix.VTIME] = 1, 0
	if err := unix.IoctlSetTermios(fd, unix.TCSETS, &raw); err != nil {
		return nil, nil, err
	}
	sizes := make(chan api.TermSize, 1)
	winch := make(chan os.Signal, 1)
	signal.Notify(winch, syscall.SIGWINCH)
	stop := make(chan struct{})
	send := func() {
		if ws, err := unix.IoctlGetWinsize(fd, unix.TIOCGWINSZ); err == nil {
			select {
			case sizes <- api.TermSize{Width: ws.Col, Height: ws.Row}:
			default:
			}
		}
	}
	send()
	go func() {
		for {
			select {
			case <-winch:
				send()
			case <-stop:
				return
			case <-ctx.Done():
				return
			}
		}
	}()
	return func() {
		signal.Stop(winch)
		close(stop)
		unix.IoctlSetTermios(fd, unix.TCSETS, old)
	}, sizes, nil
}

func runLogs(ctx context.Context, e *env, args []string) int {
	fs := newFlags(e, "logs", "[flags] POD", logsHelp)
	var p podFlags
	p.register(fs, e)
	var lo api.LogOptions
	fs.BoolVar(&lo.Follow, "f", false, "follow the log as it grows")
	fs.BoolVar(&lo.Follow, "follow", false, "same as -f")
	fs.BoolVar(&lo.Previous, "previous", false, "the previous instance's log")
	fs.BoolVar(&lo.Previous, "p", false, "same as --previous")
	fs.IntVar(&lo.TailLines, "tail", 0, "only the last `n` lines (0: all)")
	since := fs.Duration("since", 0, "only lines newer than this `duration`")
	fs.BoolVar(&lo.Timestamps, "timestamps", false, "prefix every line with its time")
	pos, code, stop := parseInterspersed(e, fs, args)
	if stop {
		return code
	}
	if len(pos) != 1 {
		fmt.Fprintln(e.stderr, "berth logs: give one pod")
		return exitUsage
	}
	if *since > 0 {
		lo.Since = time.Now().Add(-*since)
	}
	lo.Container = p.container
	c, done, err := findPod(ctx, e, p, pos[0])
	if err != nil {
		return fail(e, "logs: %v", err)
	}
	defer done()
	if err := c.Logs(ctx, p.namespace+"/"+pos[0], lo, e.stdout); err != nil && ctx.Err() == nil {
		return fail(e, "logs: %v", err)
	}
	return exitOK
}
