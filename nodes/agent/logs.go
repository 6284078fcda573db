package agent

import (
	"context"
	"fmt"
	"io"

	"berth.dev/berth/nodes/api"
	"berth.dev/berth/nodes/logs"
)

// Logs writes a container's log (see httpapi.Backend). The instance is the
// newest of the container (Previous: the one before it); its file is
// <LogDir>/<namespace>_<name>_<uid>/<container>/<attempt>.log, with the
// rotated files beside it.
func (m *Manager) Logs(ctx context.Context, pod string, opts api.LogOptions, w io.Writer) error {
	wk := m.worker(pod)
	if wk == nil {
		return fmt.Errorf("%w: pod %s", api.ErrNotFound, pod)
	}
	name, err := wk.containerName(opts.Container)
	if err != nil {
		return err
	}
	inst, ok := wk.current(name)
	if !ok {
		return fmt.Errorf("%w: container %s of pod %s has not started", api.ErrNotFound, name, pod)
	}
	attempt := attemptOf(inst)
	if opts.Previous {
		if attempt == 0 {
			return fmt.Errorf("%w: container %s of pod %s has no previous instance", api.ErrNotFound, name, pod)
		}
		attempt--
	}
	path := m.logPath(pod, inst.Labels[api.LabelPodUID], name, attempt)
	files, err := logs.Files(path)
	if err != nil {
		return err
	}
	if len(files) == 0 && (!opts.Follow || opts.Previous) {
		return fmt.Errorf("%w: no log for container %s of pod %s", api.ErrNotFound, name, pod)
	}
	var options []logs.ReadOption
	if opts.Follow {
		// A follow ends when the instance has exited (at once for the
		// previous one).
		id, previous := inst.ID, opts.Previous
		options = append(options, logs.Until(func() bool {
			if previous {
				return true
			}
			st, err := m.rt.ContainerStatus(ctx, id)
			return err != nil || st.State != StateRunning && st.State != StateCreated
		}))
	}
	return logs.Read(ctx, path, opts, w, options...)
}
