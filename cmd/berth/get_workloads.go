package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strconv"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"berth.dev/berth/gitsource"
	"berth.dev/berth/reconciler"
	"berth.dev/berth/reconciler/status"
	"berth.dev/berth/reconciler/workload"
	"berth.dev/berth/render"
)

// workloadResources maps get's RESOURCE names to the workload kinds read
// from the status branch.
var workloadResources = map[string]string{
	"deployments": "Deployment", "deployment": "Deployment", "deploy": "Deployment",
	"statefulsets": "StatefulSet", "statefulset": "StatefulSet", "sts": "StatefulSet",
	"daemonsets": "DaemonSet", "daemonset": "DaemonSet", "ds": "DaemonSet",
	"jobs": "Job", "job": "Job",
	"cronjobs": "CronJob", "cronjob": "CronJob", "cj": "CronJob",
}

// historyLimit bounds the status commits read to find when an object was
// first recorded; an older object's AGE is then a lower bound.
const historyLimit = 1000

// workloadItem is a workload as `get deployments -o yaml|json` shows it.
type workloadItem struct {
	Kind      string            `json:"kind"`
	Namespace string            `json:"namespace"`
	Name      string            `json:"name"`
	Labels    map[string]string `json:"labels,omitempty"`
	Reason    string            `json:"reason,omitempty"`
	// FirstRecorded is the time of the oldest status commit of the
	// unbroken run that holds the object: AGE when the status has no time.
	FirstRecorded time.Time       `json:"firstRecorded,omitzero"`
	Status        workload.Status `json:"status"`

	// obj is the object in git at the status's source commit (a Job a
	// CronJob started has its CronJob's); nil when git does not have it.
	obj any
}

// getWorkloads lists the workloads of one kind from the status branch.
func getWorkloads(ctx context.Context, e *env, o statusOpts, kind, namespace string, sel labels.Selector, output string, now time.Time) int {
	st, err := openStatus(ctx, e, o)
	if err != nil {
		return fail(e, "get: %v", err)
	}
	defer st.Close()
	if st.summary.Outcome == status.Failed {
		// A commit that could not be applied has no workloads in its
		// status; the last one that applied still runs.
		failed := st.summary.Commit
		found, err := lastApplied(ctx, st)
		if err != nil {
			return fail(e, "get: %v", err)
		}
		if found {
			fmt.Fprintf(e.stderr, "berth: %s could not be applied (berth status says why); showing %s, the last commit that was\n", short(failed), short(st.summary.Commit))
		} else {
			fmt.Fprintf(e.stderr, "berth: %s could not be applied, nor any commit before it (berth status says why)\n", short(failed))
		}
	}
	items, err := readWorkloads(st.snap.FS, kind, namespace)
	if err != nil {
		return fail(e, "get: read %s: %v", st.branch, err)
	}
	if st.summary.Commit != st.source.Commit || st.source.Desired == nil {
		// The objects as of the commit the status is about, not as
		// --branch has them now.
		rev, err := reconciler.LoadRevision(ctx, st.fleet, st.summary.Commit, reconciler.OfflineOptions{}, nil)
		if err != nil {
			fmt.Fprintf(e.stderr, "berth: warning: read %s, which the status is about: %v\n", short(st.summary.Commit), err)
		}
		st.source = rev
	}
	if st.source.Desired != nil {
		attachObjects(items, st.source.Desired)
	}
	items = filterWorkloads(items, sel)
	paths := make([]string, len(items))
	for i, it := range items {
		paths[i] = objectFile(it.Kind, it.Namespace, it.Name)
	}
	first, err := firstRecorded(ctx, st.store, st.head, paths, historyLimit)
	if err != nil {
		return fail(e, "get: %v", err)
	}
	for i := range items {
		items[i].FirstRecorded = first[paths[i]]
	}
	if st.summary.Outcome == status.Progressing {
		fmt.Fprintf(e.stderr, "berth: status of %s on %s: %s (berth status says more)\n", short(st.summary.Commit), st.branch, st.summary.Outcome)
	}
	switch output {
	case "json", "yaml":
		printObjects(e, items, output)
	default:
		if len(items) == 0 {
			noneFound(e, "resources", namespace)
			return exitOK
		}
		header, rows := workloadTable(kind, items, namespace == "", output == "wide", now)
		printTable(e.stdout, header, rows)
	}
	return exitOK
}

// lastApplied moves st back along the status branch to the newest status
// commit whose outcome is not Failed; false when there is none within
// historyLimit commits (st is then unchanged).
func lastApplied(ctx context.Context, st *statusView) (bool, error) {
	rev := st.head.Hash
	for range historyLimit {
		snap, err := st.store.RootSnapshot(ctx, rev+"^")
		if errors.Is(err, gitsource.ErrUnknownRevision) {
			return false, nil
		}
		if err != nil {
			return false, fmt.Errorf("status history: %w", err)
		}
		sum, err := readSummary(snap)
		if err != nil {
			return false, fmt.Errorf("status history: %w", err)
		}
		if sum.Outcome != status.Failed {
			st.snap, st.head, st.summary = snap, snap.Commit, sum
			return true, nil
		}
		rev = snap.Commit.Hash
	}
	return false, nil
}

// objectFile is where the status branch keeps an object's status.
func objectFile(kind, namespace, name string) string {
	return path.Join("objects", namespace, strings.ToLower(kind), name+".yaml")
}

// readWorkloads reads objects/NS/KIND/NAME.yaml of the status branch, in
// namespace ("" for all), sorted by namespace and name.
func readWorkloads(fsys fs.FS, kind, namespace string) ([]workloadItem, error) {
	nss := []string{namespace}
	if namespace == "" {
		entries, err := fs.ReadDir(fsys, "objects")
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil
		}
		if err != nil {
			return nil, err
		}
		nss = nss[:0]
		for _, d := range entries {
			if d.IsDir() {
				nss = append(nss, d.Name())
			}
		}
	}
	var out []workloadItem
	for _, ns := range nss {
		dir := path.Join("objects", ns, strings.ToLower(kind))
		entries, err := fs.ReadDir(fsys, dir)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		for _, d := range entries {
			if d.IsDir() || !strings.HasSuffix(d.Name(), ".yaml") {
				continue
			}
			b, err := fs.ReadFile(fsys, path.Join(dir, d.Name()))
			if err != nil {
				return nil, err
			}
			var f struct {
				Owner  workload.Owner  `json:"owner"`
				Reason string          `json:"reason"`
				Status workload.Status `json:"status"`
			}
			if err := unmarshalYAML(b, &f); err != nil {
				return nil, fmt.Errorf("%s: %w", path.Join(dir, d.Name()), err)
			}
			out = append(out, workloadItem{Kind: kind, Namespace: ns, Name: strings.TrimSuffix(d.Name(), ".yaml"), Reason: f.Reason, Status: f.Status})
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Namespace != out[j].Namespace {
			return out[i].Namespace < out[j].Namespace
		}
		return out[i].Name < out[j].Name
	})
	return out, nil
}

// attachObjects finds each item's object in git, and its labels. A Job a
// CronJob started is not in git: it gets its CronJob (the Job is named
// after it) and the labels its pods carry.
func attachObjects(items []workloadItem, d *render.Desired) {
	byKey := map[string]any{}
	cronJobs := map[string][]*batchv1.CronJob{} // by namespace
	for _, o := range d.Objects {
		byKey[o.Kind+"/"+o.Namespace+"/"+o.Name] = o.Obj
		if cj, ok := o.Obj.(*batchv1.CronJob); ok {
			cronJobs[o.Namespace] = append(cronJobs[o.Namespace], cj)
		}
	}
	for i := range items {
		it := &items[i]
		if obj, ok := byKey[it.Kind+"/"+it.Namespace+"/"+it.Name]; ok {
			it.obj = obj
			if m, ok := obj.(metav1.Object); ok {
				it.Labels = m.GetLabels()
			}
			continue
		}
		if it.Kind != "Job" {
			continue
		}
		for _, cj := range cronJobs[it.Namespace] {
			if strings.HasPrefix(it.Name, cj.Name+"-") {
				it.obj = cj
				it.Labels = map[string]string{workload.LabelCronJob: cj.Name}
				for k, v := range cj.Spec.JobTemplate.Labels {
					it.Labels[k] = v
				}
				break
			}
		}
	}
}

func filterWorkloads(items []workloadItem, sel labels.Selector) []workloadItem {
	if sel.Empty() {
		return items
	}
	out := items[:0]
	for _, it := range items {
		if sel.Matches(labels.Set(it.Labels)) {
			out = append(out, it)
		}
	}
	return out
}

// firstRecorded walks the status branch back from head and returns, for
// each path, the time of the oldest commit of the unbroken run of commits
// holding it (an object removed and added again is new, as kubectl would
// see a re-created object). After limit commits the search stops: what is
// still found is older than it says.
func firstRecorded(ctx context.Context, repo *gitsource.Repo, head gitsource.Commit, paths []string, limit int) (map[string]time.Time, error) {
	first := make(map[string]time.Time, len(paths))
	pending := map[string]bool{}
	for _, p := range paths {
		first[p] = head.Time
		pending[p] = true
	}
	rev := head.Hash
	for i := 0; i < limit && len(pending) > 0; i++ {
		snap, err := repo.RootSnapshot(ctx, rev+"^")
		if errors.Is(err, gitsource.ErrUnknownRevision) {
			break // the root commit
		}
		if err != nil {
			return nil, fmt.Errorf("status history: %w", err)
		}
		// Listing a directory reads trees only; Stat would read each
		// blob's header for its size.
		listed := map[string]map[string]bool{}
		for p := range pending {
			dir, name := path.Split(p)
			names, ok := listed[dir]
			if !ok {
				names = map[string]bool{}
				entries, _ := fs.ReadDir(snap.FS, path.Clean(dir)) // missing: none
				for _, d := range entries {
					names[d.Name()] = true
				}
				listed[dir] = names
			}
			if !names[name] {
				delete(pending, p)
				continue
			}
			first[p] = snap.Commit.Time
		}
		rev = snap.Commit.Hash
	}
	return first, nil
}

// workloadTable is kubectl's columns for kind.
func workloadTable(kind string, items []workloadItem, allNamespaces, wide bool, now time.Time) ([]string, [][]string) {
	var header []string
	if allNamespaces {
		header = append(header, "NAMESPACE")
	}
	switch kind {
	case "Deployment":
		header = append(header, "NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE")
	case "StatefulSet":
		header = append(header, "NAME", "READY", "AGE")
	case "DaemonSet":
		header = append(header, "NAME", "DESIRED", "CURRENT", "READY", "UP-TO-DATE", "AVAILABLE", "NODE SELECTOR", "AGE")
	case "Job":
		header = append(header, "NAME", "STATUS", "COMPLETIONS", "DURATION", "AGE")
	case "CronJob":
		header = append(header, "NAME", "SCHEDULE", "TIMEZONE", "SUSPEND", "ACTIVE", "LAST SCHEDULE", "AGE")
	}
	if wide {
		header = append(header, "CONTAINERS", "IMAGES")
		if kind != "StatefulSet" {
			header = append(header, "SELECTOR")
		}
	}
	rows := make([][]string, len(items))
	for i, it := range items {
		var row []string
		if allNamespaces {
			row = append(row, it.Namespace)
		}
		row = append(row, workloadColumns(it, now)...)
		if wide {
			tmpl, sel := templateOf(it.obj)
			names, images := "<none>", "<none>"
			if tmpl != nil && len(tmpl.Spec.Containers) > 0 {
				var n, im []string
				for _, c := range tmpl.Spec.Containers {
					n, im = append(n, c.Name), append(im, c.Image)
				}
				names, images = strings.Join(n, ","), strings.Join(im, ",")
			}
			row = append(row, names, images)
			if kind != "StatefulSet" {
				row = append(row, metav1.FormatLabelSelector(sel))
			}
		}
		rows[i] = row
	}
	return header, rows
}

// workloadColumns is one row of kubectl's columns for the item's kind,
// without NAMESPACE and the wide ones.
func workloadColumns(it workloadItem, now time.Time) []string {
	st := it.Status
	age := "<unknown>"
	if !it.FirstRecorded.IsZero() {
		age = humanDuration(now.Sub(it.FirstRecorded))
	}
	itoa := func(n int32) string { return strconv.Itoa(int(n)) }
	switch it.Kind {
	case "Deployment":
		return []string{it.Name, fmt.Sprintf("%d/%d", st.ReadyReplicas, st.Replicas), itoa(st.UpdatedReplicas), itoa(st.AvailableReplicas), age}
	case "StatefulSet":
		return []string{it.Name, fmt.Sprintf("%d/%d", st.ReadyReplicas, st.Replicas), age}
	case "DaemonSet":
		nodeSel := "<none>"
		if ds, ok := it.obj.(*appsv1.DaemonSet); ok && len(ds.Spec.Template.Spec.NodeSelector) > 0 {
			nodeSel = labels.FormatLabels(ds.Spec.Template.Spec.NodeSelector)
		}
		return []string{it.Name, itoa(st.DesiredNumberScheduled), itoa(st.Replicas), itoa(st.ReadyReplicas), itoa(st.UpdatedReplicas), itoa(st.AvailableReplicas), nodeSel, age}
	case "Job":
		if st.StartTime != nil {
			age = humanDuration(now.Sub(*st.StartTime))
		}
		return []string{it.Name, jobStatusText(st), jobCompletions(it), jobDuration(st, now), age}
	case "CronJob":
		schedule, tz, suspend := "<unknown>", "<none>", "False"
		if cj, ok := it.obj.(*batchv1.CronJob); ok {
			schedule = cj.Spec.Schedule
			if cj.Spec.TimeZone != nil {
				tz = *cj.Spec.TimeZone
			}
			if cj.Spec.Suspend != nil && *cj.Spec.Suspend {
				suspend = "True"
			}
		}
		last := "<none>"
		if st.LastScheduleTime != nil {
			last = humanDuration(now.Sub(*st.LastScheduleTime))
		}
		return []string{it.Name, schedule, tz, suspend, strconv.Itoa(len(st.ActiveJobs)), last, age}
	}
	return []string{it.Name, age}
}

// jobStatusText is kubectl's Job STATUS: Complete, Failed or Running.
func jobStatusText(st workload.Status) string {
	for _, c := range st.Conditions {
		if c.Status != corev1.ConditionTrue {
			continue
		}
		switch c.Type {
		case "Complete", "Failed", "Suspended", "FailureTarget", "SuccessCriteriaMet":
			return c.Type
		}
	}
	return "Running"
}

// jobCompletions is kubectl's COMPLETIONS: succeeded/completions, or
// "n/1 of p" for a Job with parallelism and no completion count.
func jobCompletions(it workloadItem) string {
	var spec *batchv1.JobSpec
	switch o := it.obj.(type) {
	case *batchv1.Job:
		spec = &o.Spec
	case *batchv1.CronJob:
		spec = &o.Spec.JobTemplate.Spec
	}
	n := it.Status.Succeeded
	switch {
	case spec == nil: // neither the Job nor its CronJob is in git
		return fmt.Sprintf("%d/?", n)
	case spec.Completions != nil:
		return fmt.Sprintf("%d/%d", n, *spec.Completions)
	case spec.Parallelism != nil && *spec.Parallelism > 1:
		return fmt.Sprintf("%d/1 of %d", n, *spec.Parallelism)
	default: // one completion, as Kubernetes defaults a Job
		return fmt.Sprintf("%d/1", n)
	}
}

// jobDuration is kubectl's DURATION: start to completion, or to now while
// running; empty before the Job started.
func jobDuration(st workload.Status, now time.Time) string {
	switch {
	case st.StartTime == nil:
		return ""
	case st.CompletionTime == nil:
		return humanDuration(now.Sub(*st.StartTime))
	default:
		return humanDuration(st.CompletionTime.Sub(*st.StartTime))
	}
}

// templateOf is the pod template and selector of a workload object.
func templateOf(obj any) (*corev1.PodTemplateSpec, *metav1.LabelSelector) {
	switch o := obj.(type) {
	case *appsv1.Deployment:
		return &o.Spec.Template, o.Spec.Selector
	case *appsv1.StatefulSet:
		return &o.Spec.Template, o.Spec.Selector
	case *appsv1.DaemonSet:
		return &o.Spec.Template, o.Spec.Selector
	case *batchv1.Job:
		return &o.Spec.Template, o.Spec.Selector
	case *batchv1.CronJob:
		return &o.Spec.JobTemplate.Spec.Template, o.Spec.JobTemplate.Spec.Selector
	}
	return nil, nil
}
