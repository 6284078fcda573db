package runtime

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	tasksapi "github.com/containerd/containerd/api/services/tasks/v1"
	tasktypes "github.com/containerd/containerd/api/types/task"
	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/opencontainers/runtime-spec/specs-go"
	"k8s.io/apimachinery/pkg/util/sets"

	"berth.dev/berth/nodes/agent"
	"berth.dev/berth/nodes/api"
	"berth.dev/berth/nodes/logs"
)

// Labels the runtime keeps on its containers beside the api.Label* ones.
// ContainerState.Labels carries the api.Label* ones and LabelLogPath.
const (
	// LabelLogPath is the container's log file.
	LabelLogPath = "berth.dev/log-path"

	labelImageID    = "berth.dev/image-id"
	labelStartedAt  = "berth.dev/started-at"
	labelFinishedAt = "berth.dev/finished-at"
	labelExitCode   = "berth.dev/exit-code"
	labelReason     = "berth.dev/reason"
)

// shimGroupAnnotation makes containerd's runc shim (io.containerd.runc.v2)
// serve every container with the same value from one process.
const shimGroupAnnotation = "io.containerd.runc.v2.group"

// publicLabels are the labels ContainerState.Labels shows.
var publicLabels = sets.New(api.LabelManaged, api.LabelPodUID, api.LabelPodName, api.LabelContainer,
	api.LabelAttempt, api.LabelPodHash, LabelLogPath)

// Exit reasons, as the kubelet reports them.
const (
	ReasonCompleted  = "Completed"
	ReasonError      = "Error"
	ReasonOOMKilled  = "OOMKilled"
	ReasonStartError = "StartError" // the process could not be started (exit code 128)
	ReasonUnknown    = "Unknown"    // the task vanished (a reboot) without a recorded exit (exit code 255)
)

// containerID names one container instance: the agent's identity, then a
// digest of (pod UID, container name, attempt), so that a retried create
// finds the instance it made.
func (r *Runtime) containerID(podUID, name string, attempt int32) string {
	sum := sha256.Sum256([]byte(podUID + "/" + name + "/" + strconv.Itoa(int(attempt))))
	return r.agentID + "-" + hex.EncodeToString(sum[:12])
}

// managedFilter selects the runtime's own containers.
var managedFilter = fmt.Sprintf("labels.%q==true", api.LabelManaged)

// CreateContainer creates one container instance in the pod's sandbox:
// its OCI spec from the image config and the Kubernetes container (see
// specOpts), a snapshot of the image, and labels tying it to its pod.
// Creating an instance that exists returns it.
func (r *Runtime) CreateContainer(ctx context.Context, cfg agent.ContainerConfig) (string, error) {
	if cfg.Pod == nil || cfg.Container == nil {
		return "", fmt.Errorf("%w: create container: pod and container are required", api.ErrInvalid)
	}
	pod, c := cfg.Pod, cfg.Container
	if err := checkPodUID(pod.UID); err != nil {
		return "", err
	}
	rec, err := r.readRecord(pod.UID)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return "", fmt.Errorf("create container %s in %s: %w: the pod has no sandbox", c.Name, pod.Key(), api.ErrNotFound)
		}
		return "", err
	}
	cfg.Sandbox = rec.sandbox()
	sc := effectiveSecurityContext(pod.Spec.SecurityContext, c.SecurityContext)
	if err := sc.checkRunAsNonRoot(); err != nil {
		return "", fmt.Errorf("create container %s in %s: %w", c.Name, pod.Key(), err)
	}
	id := r.containerID(pod.UID, c.Name, cfg.Attempt)
	labels := labelsOf(pod, c, cfg.Attempt)
	labels[labelImageID] = cfg.Image.ID
	if cfg.LogPath != "" {
		if !filepath.IsAbs(cfg.LogPath) {
			return "", fmt.Errorf("%w: log path %q is not absolute", api.ErrInvalid, cfg.LogPath)
		}
		// The log driver opens it under the shim; make sure it can.
		lf, err := logs.OpenFile(cfg.LogPath, r.opts.LogMaxSize, r.opts.LogMaxFiles)
		if err != nil {
			return "", fmt.Errorf("create container %s in %s: %w", c.Name, pod.Key(), err)
		}
		lf.Close()
		labels[LabelLogPath] = cfg.LogPath
	}
	if sc.fsGroup != nil {
		if err := applyFSGroup(cfg, *sc.fsGroup); err != nil {
			return "", fmt.Errorf("create container %s in %s: %w", c.Name, pod.Key(), err)
		}
	}
	mounts, err := volumeMounts(cfg, id, sc.privileged)
	if err != nil {
		removeSubPaths(rec.Dir, id)
		return "", fmt.Errorf("create container %s in %s: %w", c.Name, pod.Key(), err)
	}

	err = r.retry(ctx, func(ctx context.Context) error {
		if err := r.ensureNamespace(ctx); err != nil {
			return err
		}
		name, err := normalizeRef(cfg.Image.Ref)
		if err != nil {
			return err
		}
		img, err := r.client.GetImage(ctx, name)
		if err != nil {
			if errdefs.IsNotFound(err) {
				return fmt.Errorf("%w: image %s is not present", api.ErrNotFound, cfg.Image.Ref)
			}
			return err
		}
		imgSpec, err := img.Spec(ctx)
		if err != nil {
			return fmt.Errorf("image %s: %w", cfg.Image.Ref, err)
		}
		opts, err := r.specOpts(cfg, rec, sc, imgSpec.Config, id, mounts)
		if err != nil {
			return err
		}
		_, err = r.client.NewContainer(ctx, id,
			client.WithImage(img),
			client.WithSnapshotter(snapshotter),
			client.WithNewSnapshot(id, img),
			client.WithNewSpec(opts...),
			client.WithContainerLabels(labels),
			client.WithImageStopSignal(img, "SIGTERM"),
		)
		if errdefs.IsAlreadyExists(err) {
			existing, lerr := r.client.LoadContainer(ctx, id)
			if lerr != nil {
				return lerr
			}
			l, lerr := existing.Labels(ctx)
			if lerr != nil {
				return lerr
			}
			if l[api.LabelPodUID] == pod.UID && l[api.LabelContainer] == c.Name && l[api.LabelAttempt] == labels[api.LabelAttempt] {
				return nil
			}
		}
		return err
	})
	if err != nil {
		removeSubPaths(rec.Dir, id)
		return "", fmt.Errorf("create container %s in %s: %w", c.Name, pod.Key(), err)
	}
	r.log.Info("created container", "pod", pod.Key(), "container", c.Name, "attempt", cfg.Attempt, "id", id)
	return id, nil
}

// specOpts builds the container's OCI spec the way the CRI plugin does,
// over containerd's default spec.
func (r *Runtime) specOpts(cfg agent.ContainerConfig, rec *sandboxRecord, sc securityContext, img ocispec.ImageConfig, id string, mounts []specs.Mount) ([]oci.SpecOpts, error) {
	c := cfg.Container
	hostname := rec.Hostname
	if rec.HostNetwork {
		hostname, _ = os.Hostname()
	}
	env, vars := containerEnv(img, hostname, rec.PodIPs, c)
	args, err := processArgs(c, img, vars)
	if err != nil {
		return nil, err
	}
	cwd := c.WorkingDir
	if cwd == "" {
		cwd = img.WorkingDir
	}
	if cwd == "" {
		cwd = "/"
	}
	opts := []oci.SpecOpts{
		oci.WithoutRunMount,
		withoutDefaultSecuritySettings,
		oci.WithProcessArgs(args...),
		oci.WithProcessCwd(cwd),
		oci.WithDefaultPathEnv,
		oci.WithEnv(env),
		// Set from allowPrivilegeEscalation below.
		oci.WithNewPrivileges,
	}

	// The user: runAsUser/runAsGroup over the image's, resolved in the
	// image's /etc/passwd; supplementary groups from its /etc/group, then
	// supplementalGroups and fsGroup.
	user, userPart := sc.userString(img.User)
	if user != "" {
		opts = append(opts, withUser(user))
	}
	opts = append(opts, oci.WithAdditionalGIDs(userPart))
	groups := sc.supplementalGroups
	if sc.fsGroup != nil {
		groups = append(groups[:len(groups):len(groups)], *sc.fsGroup)
	}
	opts = append(opts, withGroups(groups), withRunAsNonRoot(sc, img.User))

	// One shim per pod, as the CRI plugin has it: the runc shim serves every
	// container whose spec carries the same group annotation, so a pod's
	// second container costs no shim process of its own.
	opts = append(opts, oci.WithAnnotations(map[string]string{shimGroupAnnotation: rec.PodUID}))

	// Namespaces: the pod's network, IPC and UTS (the host's network and
	// UTS with hostNetwork); a PID namespace of its own.
	if rec.HostNetwork {
		opts = append(opts, oci.WithHostNamespace(specs.NetworkNamespace), oci.WithHostNamespace(specs.UTSNamespace))
	} else {
		opts = append(opts,
			oci.WithLinuxNamespace(specs.LinuxNamespace{Type: specs.NetworkNamespace, Path: rec.NetNS}),
			oci.WithLinuxNamespace(specs.LinuxNamespace{Type: specs.UTSNamespace, Path: rec.UTSNS}),
			oci.WithHostname(rec.Hostname),
		)
	}
	opts = append(opts, oci.WithLinuxNamespace(specs.LinuxNamespace{Type: specs.IPCNamespace, Path: rec.IPCNS}))
	if r.cgroupV2 && !sc.privileged {
		opts = append(opts, oci.WithLinuxNamespace(specs.LinuxNamespace{Type: specs.CgroupNamespace}))
	}

	taken := func(dest string) bool {
		for _, m := range mounts {
			if m.Destination == dest {
				return true
			}
		}
		return false
	}
	all := append(podEtcMounts(rec.Dir, sc.readOnlyRootFilesystem, taken), mounts...)
	opts = append(opts, oci.WithMounts(all))

	opts = append(opts,
		oci.WithCgroup(podCgroup(r.CgroupParent(), rec.PodUID)+"/"+id),
		resourcesOf(c).specOpt(swapAccounting(r.cgroupV2)),
	)

	if sc.privileged {
		opts = append(opts, oci.WithPrivileged, oci.WithHostDevices, oci.WithAllDevicesAllowed)
	} else {
		capOpts, err := capabilityOpts(sc.capabilities)
		if err != nil {
			return nil, err
		}
		opts = append(opts, capOpts...)
	}
	opts = append(opts, withoutAmbientCaps)
	if sc.allowPrivilegeEscalation != nil && !*sc.allowPrivilegeEscalation {
		opts = append(opts, oci.WithNoNewPrivileges)
	}
	if sc.readOnlyRootFilesystem {
		opts = append(opts, oci.WithRootFSReadonly())
	}
	// Seccomp last: the default profile depends on the capabilities.
	sec, err := seccompOpt(sc.seccomp, sc.privileged)
	if err != nil {
		return nil, err
	}
	if sec != nil {
		opts = append(opts, sec)
	}
	return opts, nil
}

// StartContainer starts a created container: a task whose output goes to
// the log driver (the berth binary run by containerd's shim, which
// outlives this process), then the process. Starting a running container
// does nothing. A start that fails is recorded as an exit with code 128,
// reason StartError, and returned.
func (r *Runtime) StartContainer(ctx context.Context, id string) error {
	var startErr error
	err := r.retry(ctx, func(ctx context.Context) error {
		ctr, err := r.client.LoadContainer(ctx, id)
		if err != nil {
			return err
		}
		labels, err := ctr.Labels(ctx)
		if err != nil {
			return err
		}
		if labels[labelExitCode] != "" {
			return fmt.Errorf("%w: container %s has exited; create a new one", api.ErrConflict, id)
		}
		task, err := ctr.Task(ctx, nil)
		if errdefs.IsNotFound(err) {
			creator := cio.NullIO
			if p := labels[LabelLogPath]; p != "" {
				args, err := r.logDriverArgs(p)
				if err != nil {
					return err
				}
				creator = cio.BinaryIO(r.opts.LoggerPath, args)
			}
			task, err = ctr.NewTask(ctx, creator)
			if err != nil {
				if unavailable(err) {
					return err
				}
				startErr = err
				return r.recordStartError(ctx, ctr, err)
			}
		} else if err != nil {
			return err
		}
		st, err := task.Status(ctx)
		if err != nil {
			return err
		}
		if st.Status != client.Created {
			return nil
		}
		if err := task.Start(ctx); err != nil {
			if unavailable(err) {
				return err
			}
			startErr = err
			task.Delete(ctx, client.WithProcessKill)
			return r.recordStartError(ctx, ctr, err)
		}
		_, err = ctr.SetLabels(ctx, map[string]string{labelStartedAt: time.Now().UTC().Format(time.RFC3339Nano)})
		return err
	})
	if err == nil && startErr != nil {
		err = startErr
	}
	if err != nil {
		return fmt.Errorf("start container %s: %w", id, err)
	}
	r.log.Info("started container", "id", id)
	return nil
}

func (r *Runtime) recordStartError(ctx context.Context, ctr client.Container, cause error) error {
	now := time.Now().UTC().Format(time.RFC3339Nano)
	_, err := ctr.SetLabels(ctx, map[string]string{
		labelStartedAt:  now,
		labelFinishedAt: now,
		labelExitCode:   "128",
		labelReason:     ReasonStartError,
	})
	if err != nil {
		return fmt.Errorf("%v (and recording it: %w)", cause, err)
	}
	return nil
}

// StopContainer sends the image's stop signal (SIGTERM unless the image
// says otherwise), waits up to grace, then SIGKILL, and waits for the
// process to be gone. Then it records the exit in the container's labels
// and deletes the task (the container keeps its exit status, readable
// after the task is gone and after an agent restart). A stopped or
// missing container is not an error.
func (r *Runtime) StopContainer(ctx context.Context, id string, grace time.Duration) error {
	err := r.retry(ctx, func(ctx context.Context) error {
		ctr, err := r.client.LoadContainer(ctx, id)
		if errdefs.IsNotFound(err) {
			return nil
		}
		if err != nil {
			return err
		}
		task, err := ctr.Task(ctx, nil)
		if errdefs.IsNotFound(err) {
			return r.finalize(ctx, ctr, nil)
		}
		if err != nil {
			return err
		}
		st, err := task.Status(ctx)
		if err != nil {
			return err
		}
		if st.Status != client.Stopped {
			exited, err := task.Wait(ctx)
			if err != nil {
				return err
			}
			gone := false
			if grace > 0 && st.Status != client.Created {
				sig, err := client.GetStopSignal(ctx, ctr, syscall.SIGTERM)
				if err != nil {
					sig = syscall.SIGTERM
				}
				if err := task.Kill(ctx, sig); err != nil && !errdefs.IsNotFound(err) {
					return fmt.Errorf("signal %v: %w", sig, err)
				}
				timer := time.NewTimer(grace)
				select {
				case <-exited:
					gone = true
				case <-timer.C:
				case <-ctx.Done():
					timer.Stop()
					return ctx.Err()
				}
				timer.Stop()
			}
			if !gone {
				if err := task.Kill(ctx, syscall.SIGKILL); err != nil && !errdefs.IsNotFound(err) {
					return fmt.Errorf("kill: %w", err)
				}
				select {
				case <-exited:
				case <-ctx.Done():
					return ctx.Err()
				}
			}
		}
		return r.finalize(ctx, ctr, task)
	})
	if err != nil {
		return fmt.Errorf("stop container %s: %w", id, err)
	}
	return nil
}

// finalize records how a container's task ended in the container's labels
// and deletes the task, which frees the shim, the log driver and the
// cgroup. With no task, a container that was started and has no exit
// recorded lost its task (a reboot): it is recorded as exited with 255,
// reason Unknown, as the CRI plugin does.
func (r *Runtime) finalize(ctx context.Context, ctr client.Container, task client.Task) error {
	labels, err := ctr.Labels(ctx)
	if err != nil {
		return err
	}
	if task == nil {
		if labels[labelExitCode] != "" || labels[labelStartedAt] == "" {
			return nil
		}
		_, err := ctr.SetLabels(ctx, map[string]string{
			labelExitCode:   "255",
			labelReason:     ReasonUnknown,
			labelFinishedAt: time.Now().UTC().Format(time.RFC3339Nano),
		})
		return err
	}
	st, err := task.Status(ctx)
	if err != nil {
		return err
	}
	if st.Status != client.Stopped {
		return nil
	}
	if labels[labelExitCode] == "" {
		oom := false
		if spec, err := ctr.Spec(ctx); err == nil && spec.Linux != nil {
			n, err := oomKills(spec.Linux.CgroupsPath, r.cgroupV2)
			oom = err == nil && n > 0
		}
		code := int32(st.ExitStatus)
		if _, err := ctr.SetLabels(ctx, map[string]string{
			labelExitCode:   strconv.Itoa(int(code)),
			labelReason:     exitReason(code, oom),
			labelFinishedAt: st.ExitTime.UTC().Format(time.RFC3339Nano),
		}); err != nil {
			return err
		}
	}
	if _, err := task.Delete(ctx); err != nil && !errdefs.IsNotFound(err) {
		return fmt.Errorf("delete task: %w", err)
	}
	return nil
}

func exitReason(code int32, oom bool) string {
	switch {
	case oom:
		return ReasonOOMKilled
	case code == 0:
		return ReasonCompleted
	default:
		return ReasonError
	}
}

// RemoveContainer deletes a container with its snapshot (killing its
// task if it still runs) and its subPath mounts; missing is not an error.
// Its log file stays: it belongs to whoever chose the path.
func (r *Runtime) RemoveContainer(ctx context.Context, id string) error {
	var podUID string
	err := r.retry(ctx, func(ctx context.Context) error {
		ctr, err := r.client.LoadContainer(ctx, id)
		if errdefs.IsNotFound(err) {
			return nil
		}
		if err != nil {
			return err
		}
		labels, err := ctr.Labels(ctx)
		if err != nil {
			return err
		}
		if labels[api.LabelManaged] != "true" {
			return fmt.Errorf("%w: container %s is not berth's", api.ErrNotFound, id)
		}
		podUID = labels[api.LabelPodUID]
		if task, err := ctr.Task(ctx, nil); err == nil {
			if _, err := task.Delete(ctx, client.WithProcessKill); err != nil && !errdefs.IsNotFound(err) {
				return fmt.Errorf("delete task: %w", err)
			}
		} else if !errdefs.IsNotFound(err) {
			return err
		}
		if err := ctr.Delete(ctx, client.WithSnapshotCleanup); err != nil && !errdefs.IsNotFound(err) {
			return err
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("remove container %s: %w", id, err)
	}
	if podUID != "" && checkPodUID(podUID) == nil {
		if err := removeSubPaths(filepath.Join(podsDir(r.opts.StateDir), podUID), id); err != nil {
			return fmt.Errorf("remove container %s: %w", id, err)
		}
	}
	return nil
}

// ContainerStatus reports one container; api.ErrNotFound when unknown. A
// container found exited has its exit recorded and its task deleted
// (finalize), so that the status stays readable without the task.
func (r *Runtime) ContainerStatus(ctx context.Context, id string) (agent.ContainerState, error) {
	var out agent.ContainerState
	err := r.retry(ctx, func(ctx context.Context) error {
		info, err := r.client.ContainerService().Get(ctx, id)
		if errdefs.IsNotFound(err) || (err == nil && info.Labels[api.LabelManaged] != "true") {
			return fmt.Errorf("container %s: %w", id, api.ErrNotFound)
		}
		if err != nil {
			return err
		}
		resp, err := r.client.TaskService().Get(ctx, &tasksapi.GetRequest{ContainerID: id})
		var proc *tasktypes.Process
		if err == nil {
			proc = resp.Process
		} else if !errdefs.IsNotFound(errgrpc.ToNative(err)) {
			return err
		}
		out, err = r.state(ctx, info, proc)
		return err
	})
	return out, err
}

// ListContainers returns every container this agent made, finalizing the
// exited ones (see ContainerStatus).
func (r *Runtime) ListContainers(ctx context.Context) ([]agent.ContainerState, error) {
	var out []agent.ContainerState
	err := r.retry(ctx, func(ctx context.Context) error {
		out = out[:0]
		infos, err := r.client.ContainerService().List(ctx, managedFilter)
		if err != nil {
			return err
		}
		resp, err := r.client.TaskService().List(ctx, &tasksapi.ListTasksRequest{})
		if err != nil {
			return err
		}
		procs := map[string]*tasktypes.Process{}
		for _, p := range resp.Tasks {
			// containerd 1.6 leaves ContainerID empty; an init process's
			// ID is its container's.
			id := p.ContainerID
			if id == "" {
				id = p.ID
			}
			procs[id] = p
		}
		for _, info := range infos {
			st, err := r.state(ctx, info, procs[info.ID])
			if errdefs.IsNotFound(err) {
				continue // removed meanwhile
			}
			if err != nil {
				return err
			}
			out = append(out, st)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list containers: %w", err)
	}
	return out, nil
}

// state derives a container's state from its record and task, finalizing
// it when the task has stopped or vanished.
func (r *Runtime) state(ctx context.Context, info containers.Container, proc *tasktypes.Process) (agent.ContainerState, error) {
	if (proc == nil && info.Labels[labelStartedAt] != "" && info.Labels[labelExitCode] == "") ||
		(proc != nil && proc.Status == tasktypes.Status_STOPPED) {
		ctr, err := r.client.LoadContainer(ctx, info.ID)
		if err != nil {
			return agent.ContainerState{}, err
		}
		// Load the task even when the list had none: only a task that
		// is really gone may be recorded as lost.
		task, err := ctr.Task(ctx, nil)
		if errdefs.IsNotFound(err) {
			task = nil
		} else if err != nil {
			return agent.ContainerState{}, err
		}
		if proc == nil && task != nil {
			resp, err := r.client.TaskService().Get(ctx, &tasksapi.GetRequest{ContainerID: info.ID})
			if err != nil {
				return agent.ContainerState{}, err
			}
			if resp.Process.Status != tasktypes.Status_STOPPED {
				return stateOf(info, resp.Process), nil
			}
		}
		if err := r.finalize(ctx, ctr, task); err != nil && !errdefs.IsNotFound(err) {
			return agent.ContainerState{}, err
		}
		if info, err = r.client.ContainerService().Get(ctx, info.ID); err != nil {
			return agent.ContainerState{}, err
		}
		proc = nil
	}
	return stateOf(info, proc), nil
}

// stateOf is a container's state from its record and, while it has one,
// its task.
func stateOf(info containers.Container, proc *tasktypes.Process) agent.ContainerState {
	l := info.Labels
	st := agent.ContainerState{
		ID:        info.ID,
		Labels:    map[string]string{},
		Image:     info.Image,
		ImageID:   l[labelImageID],
		CreatedAt: info.CreatedAt,
		StartedAt: parseTime(l[labelStartedAt]),
		State:     agent.StateCreated,
	}
	for k, v := range l {
		if publicLabels.Has(k) {
			st.Labels[k] = v
		}
	}
	switch {
	case l[labelExitCode] != "":
		code, _ := strconv.Atoi(l[labelExitCode])
		st.State = agent.StateExited
		st.ExitCode = int32(code)
		st.Reason = l[labelReason]
		st.FinishedAt = parseTime(l[labelFinishedAt])
	case proc == nil:
		// Created, never started.
	default:
		switch proc.Status {
		case tasktypes.Status_CREATED:
			st.State = agent.StateCreated
		case tasktypes.Status_RUNNING, tasktypes.Status_PAUSED, tasktypes.Status_PAUSING:
			st.State = agent.StateRunning
			st.Pid = proc.Pid
		case tasktypes.Status_STOPPED:
			st.State = agent.StateExited
			st.ExitCode = int32(proc.ExitStatus)
			st.Reason = exitReason(st.ExitCode, false)
			if proc.ExitedAt != nil {
				st.FinishedAt = proc.ExitedAt.AsTime()
			}
		default:
			st.State = agent.StateUnknown
		}
	}
	return st
}

func parseTime(s string) time.Time {
	t, _ := time.Parse(time.RFC3339Nano, s)
	return t
}
