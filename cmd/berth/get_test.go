package main

import (
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"berth.dev/berth/nodes/api"
)

func TestPodStatusText(t *testing.T) {
	waiting := func(reason string) corev1.ContainerState {
		return corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: reason}}
	}
	exited := func(code int32, reason string) corev1.ContainerState {
		return corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: code, Reason: reason}}
	}
	running := corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}
	for _, c := range []struct {
		name string
		p    api.PodStatus
		want string
	}{
		{"running", api.PodStatus{Phase: corev1.PodRunning, ContainerStatuses: []api.ContainerStatus{{State: running}}}, "Running"},
		{"crash loop", api.PodStatus{Phase: corev1.PodRunning, ContainerStatuses: []api.ContainerStatus{{State: running}, {State: waiting("CrashLoopBackOff")}}}, "CrashLoopBackOff"},
		{"pull error", api.PodStatus{Phase: corev1.PodPending, ContainerStatuses: []api.ContainerStatus{{State: waiting("ErrImagePull")}}}, "ErrImagePull"},
		{"completed", api.PodStatus{Phase: corev1.PodSucceeded, ContainerStatuses: []api.ContainerStatus{{State: exited(0, "Completed")}}}, "Completed"},
		{"terminating", api.PodStatus{Phase: corev1.PodRunning, Terminating: true}, "Terminating"},
		{"pod reason", api.PodStatus{Phase: corev1.PodFailed, Reason: "DeadlineExceeded"}, "DeadlineExceeded"},
		{"second init running", api.PodStatus{Phase: corev1.PodPending,
			InitContainerStatuses: []api.ContainerStatus{{State: exited(0, "Completed")}, {State: running}, {State: waiting("PodInitializing")}}}, "Init:1/3"},
		{"init failed", api.PodStatus{Phase: corev1.PodPending, InitContainerStatuses: []api.ContainerStatus{{State: exited(1, "Error")}}}, "Init:Error"},
		{"init crash loop", api.PodStatus{Phase: corev1.PodPending, InitContainerStatuses: []api.ContainerStatus{{State: waiting("CrashLoopBackOff")}}}, "Init:CrashLoopBackOff"},
	} {
		if got := podStatusText(c.p); got != c.want {
			t.Errorf("%s: %q, want %q", c.name, got, c.want)
		}
	}
}

func TestHumanDuration(t *testing.T) {
	for d, want := range map[time.Duration]string{
		-time.Second:                 "0s",
		45 * time.Second:             "45s",
		150 * time.Second:            "2m30s",
		5 * time.Minute:              "5m",
		75 * time.Minute:             "75m",
		5*time.Hour + 5*time.Minute:  "5h5m",
		20 * time.Hour:               "20h",
		3*24*time.Hour + 4*time.Hour: "3d4h",
		30 * 24 * time.Hour:          "30d",
	} {
		if got := humanDuration(d); got != want {
			t.Errorf("humanDuration(%v) = %q, want %q", d, got, want)
		}
	}
}
