package main

import (
	"strings"
	"testing"
	"testing/fstest"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"berth.dev/berth/reconciler/workload"
)

func TestWorkloadColumns(t *testing.T) {
	now := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	ago := func(d time.Duration) *time.Time { x := now.Add(-d); return &x }
	i32 := func(n int32) *int32 { return &n }
	yes, berlin := true, "Europe/Berlin"
	cronJob := &batchv1.CronJob{Spec: batchv1.CronJobSpec{Schedule: "0 3 * * *", TimeZone: &berlin, Suspend: &yes,
		JobTemplate: batchv1.JobTemplateSpec{Spec: batchv1.JobSpec{Parallelism: i32(3)}}}}
	for _, tc := range []struct {
		name string
		it   workloadItem
		want string
	}{
		{"deployment rolling", workloadItem{Kind: "Deployment", Name: "web", FirstRecorded: now.Add(-26 * time.Hour),
			Status: workload.Status{Replicas: 4, ReadyReplicas: 3, UpdatedReplicas: 2, AvailableReplicas: 3}}, "web 3/4 2 3 26h"},
		{"deployment age unknown", workloadItem{Kind: "Deployment", Name: "web"}, "web 0/0 0 0 <unknown>"},
		{"statefulset", workloadItem{Kind: "StatefulSet", Name: "db", FirstRecorded: now.Add(-150 * time.Second),
			Status: workload.Status{Replicas: 3, ReadyReplicas: 1}}, "db 1/3 2m30s"},
		{"daemonset without node selector", workloadItem{Kind: "DaemonSet", Name: "agent", FirstRecorded: now.Add(-9 * 24 * time.Hour),
			Status: workload.Status{DesiredNumberScheduled: 3, Replicas: 2, ReadyReplicas: 2, UpdatedReplicas: 1, AvailableReplicas: 2}, obj: &appsv1.DaemonSet{}},
			"agent 3 2 2 1 2 <none> 9d"},
		{"daemonset with node selector", workloadItem{Kind: "DaemonSet", Name: "gpu", obj: &appsv1.DaemonSet{Spec: appsv1.DaemonSetSpec{Template: corev1.PodTemplateSpec{
			Spec: corev1.PodSpec{NodeSelector: map[string]string{"gpu": "true", "zone": "a"}}}}}},
			"gpu 0 0 0 0 0 gpu=true,zone=a <unknown>"},
		{"job complete", workloadItem{Kind: "Job", Name: "migrate", obj: &batchv1.Job{Spec: batchv1.JobSpec{Completions: i32(5)}},
			Status: workload.Status{Succeeded: 5, StartTime: ago(time.Hour), CompletionTime: ago(50 * time.Minute),
				Conditions: []workload.Condition{{Type: "Complete", Status: corev1.ConditionTrue}}}},
			"migrate Complete 5/5 10m 60m"},
		{"job failed", workloadItem{Kind: "Job", Name: "bad", obj: &batchv1.Job{}, FirstRecorded: now.Add(-time.Minute),
			Status: workload.Status{Failed: 6, StartTime: ago(30 * time.Second), CompletionTime: ago(0),
				Conditions: []workload.Condition{{Type: "Complete", Status: corev1.ConditionFalse}, {Type: "Failed", Status: corev1.ConditionTrue}}}},
			"bad Failed 0/1 30s 30s"},
		{"job not started: age from the status branch", workloadItem{Kind: "Job", Name: "later", obj: &batchv1.Job{Spec: batchv1.JobSpec{Parallelism: i32(4)}},
			FirstRecorded: now.Add(-5 * time.Second)}, "later Running 0/1 of 4  5s"},
		{"job running, of a CronJob", workloadItem{Kind: "Job", Name: "nightly-1", obj: cronJob,
			Status: workload.Status{Active: 3, Succeeded: 1, StartTime: ago(4 * time.Minute)}}, "nightly-1 Running 1/1 of 3 4m 4m"},
		{"job not in git", workloadItem{Kind: "Job", Name: "orphan", Status: workload.Status{Succeeded: 1}}, "orphan Running 1/?  <unknown>"},
		{"cronjob", workloadItem{Kind: "CronJob", Name: "nightly", obj: cronJob, FirstRecorded: now.Add(-72 * time.Hour),
			Status: workload.Status{ActiveJobs: []string{"nightly-1", "nightly-2"}, LastScheduleTime: ago(9 * time.Hour)}},
			"nightly 0 3 * * * Europe/Berlin True 2 9h 3d"},
		{"cronjob never scheduled, not in git", workloadItem{Kind: "CronJob", Name: "gone"}, "gone <unknown> <none> False 0 <none> <unknown>"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := strings.Join(workloadColumns(tc.it, now), " "); got != tc.want {
				t.Errorf("got  %q\nwant %q", got, tc.want)
			}
		})
	}
}

func TestWorkloadTable(t *testing.T) {
	now := time.Now()
	dep := &appsv1.Deployment{Spec: appsv1.DeploymentSpec{
		Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
		Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "web", Image: "nginx:1.27"}, {Name: "log", Image: "busybox"}}}},
	}}
	items := []workloadItem{
		{Kind: "Deployment", Namespace: "shop", Name: "web", obj: dep},
		{Kind: "Deployment", Namespace: "shop", Name: "lost"},
	}
	header, rows := workloadTable("Deployment", items, true, true, now)
	var b strings.Builder
	printTable(&b, header, rows)
	want := `NAMESPACE   NAME   READY   UP-TO-DATE   AVAILABLE   AGE         CONTAINERS   IMAGES               SELECTOR
shop        web    0/0     0            0           <unknown>   web,log      nginx:1.27,busybox   app=web
shop        lost   0/0     0            0           <unknown>   <none>       <none>               <none>
`
	if got := b.String(); got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
	header, _ = workloadTable("StatefulSet", nil, false, true, now)
	if got := strings.Join(header, ","); got != "NAME,READY,AGE,CONTAINERS,IMAGES" {
		t.Errorf("statefulset wide header %s", got)
	}
}

func TestReadWorkloads(t *testing.T) {
	fsys := fstest.MapFS{
		"objects/shop/deployment/web.yaml":  {Data: []byte("owner: {kind: Deployment, namespace: shop, name: web}\nreason: steady\nstatus:\n  replicas: 2\n  readyReplicas: 1\n")},
		"objects/shop/deployment/api.yaml":  {Data: []byte("status:\n  replicas: 1\n")},
		"objects/shop/deployment/notes.txt": {Data: []byte("not a status")},
		"objects/default/deployment/x.yaml": {Data: []byte("status: {}\n")},
		"objects/shop/job/web.yaml":         {Data: []byte("status: {}\n")},
		"summary.yaml":                      {Data: []byte("outcome: Ready\n")},
	}
	items, err := readWorkloads(fsys, "Deployment", "")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, it := range items {
		got = append(got, it.Namespace+"/"+it.Name)
	}
	if strings.Join(got, " ") != "default/x shop/api shop/web" {
		t.Errorf("all namespaces: %v", got)
	}
	if items[2].Reason != "steady" || items[2].Status.ReadyReplicas != 1 || items[2].Status.Replicas != 2 {
		t.Errorf("shop/web read as %+v", items[2])
	}
	if items, err := readWorkloads(fsys, "StatefulSet", "shop"); err != nil || len(items) != 0 {
		t.Errorf("no statefulsets: %v, %v", items, err)
	}
	if items, err := readWorkloads(fstest.MapFS{"summary.yaml": {}}, "Job", ""); err != nil || len(items) != 0 {
		t.Errorf("no objects at all: %v, %v", items, err)
	}
	if _, err := readWorkloads(fstest.MapFS{"objects/a/job/j.yaml": {Data: []byte("status: [")}}, "Job", "a"); err == nil || !strings.Contains(err.Error(), "objects/a/job/j.yaml") {
		t.Errorf("broken file: %v", err)
	}

	sel, _ := labels.Parse("tier=web")
	kept := filterWorkloads([]workloadItem{{Name: "a", Labels: map[string]string{"tier": "web"}}, {Name: "b"}}, sel)
	if len(kept) != 1 || kept[0].Name != "a" {
		t.Errorf("filter: %+v", kept)
	}
}
