package workload

import (
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"berth.dev/berth/nodes/api"
	"berth.dev/berth/render"
)

func podObj(name, image, nodeName string) *render.Object {
	t := template(image)
	return obj("Pod", name, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", Labels: t.Labels}, Spec: func() corev1.PodSpec {
		s := t.Spec
		s.NodeName = nodeName
		return s
	}()})
}

func TestBarePod(t *testing.T) {
	s := newSim(t, 3, podObj("debug", "v1", "m2"))
	r := s.compute()
	w := workloadOf(t, r, "Pod", "debug")
	if len(w.Pods) != 1 || w.Pods[0].Name != "debug" || w.Pods[0].Action != Create || w.Pods[0].Machine != "m2" {
		t.Fatalf("pods %+v", w.Pods)
	}
	s.run(10, nil)
	// A changed spec replaces it in place, on its machine.
	s.objects[0] = podObj("debug", "v2", "m2")
	w = workloadOf(t, s.compute(), "Pod", "debug")
	if w.Pods[0].Action != Replace || w.Pods[0].Machine != "m2" || len(w.Stop) != 0 {
		t.Fatalf("pods %+v stop %+v", w.Pods, w.Stop)
	}
	r = s.run(10, nil)
	if w := workloadOf(t, r, "Pod", "debug"); w.Status.ReadyReplicas != 1 || w.Status.UpdatedReplicas != 1 {
		t.Fatalf("status %+v", w.Status)
	}
	// A pod written by hand, unlabelled, is still found by its name.
	p := s.pods["default/debug"]
	p.Labels = nil
	if r := s.compute(); r.Changes() != 0 || len(r.Orphans) != 0 {
		t.Fatalf("changes %d orphans %v", r.Changes(), r.Orphans)
	}
}

func TestObserved(t *testing.T) {
	started := t0.Add(-time.Minute)
	finished := metav1.NewTime(t0)
	p := Observed("m1", &api.Pod{Labels: map[string]string{LabelOwnerKind: "Job", LabelOwnerName: "j"}}, &api.PodStatus{
		Namespace: "default", Name: "j-0", Phase: corev1.PodFailed, StartedAt: started,
		ContainerStatuses: []api.ContainerStatus{{Name: "app", RestartCount: 2,
			State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 3, FinishedAt: finished}}}},
	}, time.Time{}, time.Time{})
	if p.Machine != "m1" || p.Created != started || len(p.Containers) != 1 || *p.Containers[0].ExitCode != 3 ||
		!p.Containers[0].FinishedAt.Equal(t0) || p.Containers[0].RestartCount != 2 {
		t.Fatalf("%+v", p)
	}
	if o, ok := OwnerFromLabels(p.Namespace, p.Labels); !ok || o.String() != "Job default/j" {
		t.Fatalf("owner %v", o)
	}
}
