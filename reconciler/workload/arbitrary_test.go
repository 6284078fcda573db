package workload

import (
	"encoding/json"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	"pgregory.net/rapid"

	"berth.dev/berth/render"
)

// TestArbitraryObservations feeds Compute whatever the agents might say
// (pods in any phase, on machines reachable, unreachable or gone, with
// stray names, labels and hashes, a memory from elsewhere) and checks the
// rules no pass may break: it is deterministic; no pod is wanted twice;
// a new pod never takes the name of a pod that may still run; a pod is
// replaced only when it is there; and every observed pod of a workload is
// either wanted or stopped, never both, never forgotten.
func TestArbitraryObservations(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		images := []string{"v1", "v2", "v3"}
		img := func(label string) string { return rapid.SampledFrom(images).Draw(rt, label) }
		n := func(label string, max int32) int32 { return rapid.Int32Range(0, max).Draw(rt, label) }
		dsSurge, dsUnav := n("dsSurge", 1), n("dsUnav", 2)
		jobPar := n("parallelism", 3) + 1
		stsParallel := rapid.Bool().Draw(rt, "parallel")
		jobIndexed := rapid.Bool().Draw(rt, "indexed")
		var recreate bool
		var dR, dSurge, dUnav, dMinReady int32
		objects := []*render.Object{
			deploymentObj("d", n("dReplicas", 5), img("dImage"), func(d *appsv1.Deployment) {
				dR = *d.Spec.Replicas
				if recreate = rapid.Bool().Draw(rt, "recreate"); recreate {
					d.Spec.Strategy = appsv1.DeploymentStrategy{Type: appsv1.RecreateDeploymentStrategyType}
				} else {
					dSurge, dUnav = n("surge", 2), n("unav", 2)
					d.Spec.Strategy.RollingUpdate = &appsv1.RollingUpdateDeployment{
						MaxSurge: ptr(intstr.FromInt32(dSurge)), MaxUnavailable: ptr(intstr.FromInt32(dUnav))}
				}
				d.Spec.Paused = rapid.Bool().Draw(rt, "paused")
				dMinReady = n("minReady", 30)
				d.Spec.MinReadySeconds = dMinReady
			}),
			statefulSetObj("s", n("sReplicas", 4), img("sImage"), func(s *appsv1.StatefulSet) {
				if stsParallel {
					parallel(s)
				}
				s.Spec.UpdateStrategy.RollingUpdate.Partition = ptr(n("partition", 4))
			}),
			daemonSetObj("ds", img("dsImage"), intstr.FromInt32(dsSurge), intstr.FromInt32(dsUnav)),
			jobObj("j", jobSpec(n("completions", 4)+1, jobPar, func(j *batchv1.JobSpec) {
				if jobIndexed {
					indexed(j)
				}
				if rapid.Bool().Draw(rt, "ttl") {
					j.TTLSecondsAfterFinished = ptr(n("ttlSeconds", 100))
				}
			})),
			cronJobObj("c", rapid.SampledFrom([]string{"* * * * *", "*/5 * * * *", "0 0 * * *"}).Draw(rt, "schedule"), func(c *batchv1.CronJobSpec) {
				c.ConcurrencyPolicy = rapid.SampledFrom([]batchv1.ConcurrencyPolicy{batchv1.AllowConcurrent, batchv1.ForbidConcurrent, batchv1.ReplaceConcurrent}).Draw(rt, "policy")
			}),
			podObj("p", img("pImage"), ""),
		}
		now := t0.Add(time.Duration(rapid.IntRange(0, 3600).Draw(rt, "now")) * time.Second)
		machines := []Machine{{Name: "m0", Reachable: true}, {Name: "m1", Reachable: rapid.Bool().Draw(rt, "m1Reachable")}, {Name: "m2", Reachable: true}}
		hashes := []string{fnvHash(ptr(template("v1"))), fnvHash(ptr(template("v2"))), "stray"}
		cronRun := fmt.Sprintf("c-%d", now.Unix()/60-int64(rapid.IntRange(0, 3).Draw(rt, "cronAge")))
		owners := []Owner{
			{"Deployment", "default", "d"}, {"StatefulSet", "default", "s"}, {"DaemonSet", "default", "ds"},
			{"Job", "default", "j"}, {"Job", "default", cronRun}, {"Pod", "default", "p"}, {"Deployment", "default", "gone"},
		}
		names := func(o Owner) []string {
			switch o.Kind {
			case "StatefulSet":
				return []string{"s-0", "s-1", "s-3", "s-7", "s-x"}
			case "DaemonSet":
				return []string{"ds-" + suffix("m0"), "ds-" + suffix("m1"), "ds-" + suffix("m2/"+hashes[1]), "ds-" + suffix("m9")}
			case "Job":
				return []string{o.Name + "-0", o.Name + "-1", o.Name + "-1-1", o.Name + "-" + suffix(o.Name+"/0"), o.Name + "-" + suffix(o.Name+"/1")}
			case "Pod":
				return []string{"p"}
			}
			return []string{o.Name + "-" + hashes[0] + "-" + suffix(o.Name+"/"+hashes[0]+"/0"), o.Name + "-" + hashes[1] + "-" + suffix(o.Name+"/"+hashes[1]+"/0"), o.Name + "-x"}
		}
		var pods []Pod
		seen := map[string]bool{}
		for i := range rapid.IntRange(0, 14).Draw(rt, "pods") {
			o := rapid.SampledFrom(owners).Draw(rt, fmt.Sprint("owner", i))
			name := rapid.SampledFrom(names(o)).Draw(rt, fmt.Sprint("name", i))
			if seen[name] {
				continue
			}
			seen[name] = true
			labels := ownerLabels(o)
			if o.Kind == "Job" {
				labels[LabelJobCompletionIndex] = fmt.Sprint(rapid.IntRange(0, 5).Draw(rt, fmt.Sprint("index", i)))
				if o.Name != "j" {
					labels[LabelCronJob] = "c"
				}
			}
			p := Pod{
				Namespace: "default", Name: name, Labels: labels,
				Machine:      rapid.SampledFrom([]string{"m0", "m1", "m2", "m9"}).Draw(rt, fmt.Sprint("machine", i)),
				TemplateHash: rapid.SampledFrom(hashes).Draw(rt, fmt.Sprint("hash", i)),
				Phase:        rapid.SampledFrom([]corev1.PodPhase{corev1.PodPending, corev1.PodRunning, corev1.PodSucceeded, corev1.PodFailed, corev1.PodUnknown}).Draw(rt, fmt.Sprint("phase", i)),
				Ready:        rapid.Bool().Draw(rt, fmt.Sprint("ready", i)),
				Terminating:  rapid.IntRange(0, 4).Draw(rt, fmt.Sprint("terminating", i)) == 0,
				Created:      now.Add(-time.Duration(rapid.IntRange(0, 600).Draw(rt, fmt.Sprint("age", i))) * time.Second),
				Containers:   []ContainerState{{Name: "app", RestartCount: rapid.Int32Range(0, 3).Draw(rt, fmt.Sprint("restarts", i))}},
			}
			p.StartedAt, p.ReadySince = p.Created, p.Created
			pods = append(pods, p)
		}
		// Mostly healthy pods of the Deployment, where its budget matters.
		for i := range rapid.IntRange(0, 6).Draw(rt, "dPods") {
			h := rapid.SampledFrom(hashes).Draw(rt, fmt.Sprint("dHash", i))
			name := fmt.Sprintf("d-%s-%s", h, suffix(fmt.Sprintf("d/%s/%d", h, i)))
			if seen[name] {
				continue
			}
			seen[name] = true
			created := now.Add(-time.Duration(rapid.IntRange(0, 60).Draw(rt, fmt.Sprint("dAge", i))) * time.Second)
			pods = append(pods, Pod{Namespace: "default", Name: name, Labels: ownerLabels(Owner{Kind: "Deployment", Name: "d"}),
				Machine: rapid.SampledFrom([]string{"m0", "m1", "m2"}).Draw(rt, fmt.Sprint("dMachine", i)), TemplateHash: h,
				Phase: corev1.PodRunning, Ready: rapid.IntRange(0, 4).Draw(rt, fmt.Sprint("dReady", i)) > 0,
				Created: created, StartedAt: created, ReadySince: created})
		}
		in := Input{Objects: objects, Machines: machines, Pods: pods, Now: now}
		opts := Options{TemplateHash: fnvHash, RescheduleAfter: time.Minute}
		machines[1].UnreachableSince = now.Add(-time.Duration(rapid.IntRange(0, 120).Draw(rt, "unreachableFor")) * time.Second)
		r, err := Compute(in, opts)
		if err != nil {
			rt.Fatal(err)
		}
		in.Memory = r.Memory
		// A pass changes none of its input.
		before := snapshot(in)
		r2, _ := Compute(in, opts) // a second pass with its own memory
		if !reflect.DeepEqual(before, snapshot(in)) {
			rt.Fatal("a pass modified its input")
		}
		if again, _ := Compute(in, opts); !reflect.DeepEqual(r2, again) {
			rt.Fatal("non-deterministic")
		}
		// A stopping copy of a healthy pod on another machine changes
		// nothing: the pod is counted once, where it runs.
		if len(pods) > 0 {
			i := rapid.IntRange(0, len(pods)-1).Draw(rt, "copyOf")
			if o := pods[i]; !o.Terminating && (o.Machine == "m0" || o.Machine == "m2") {
				cp := o
				cp.Machine = map[string]string{"m0": "m2", "m2": "m0"}[o.Machine]
				cp.Terminating = true
				withCopy := in
				withCopy.Pods = append(slices.Clone(pods), cp)
				r3, _ := Compute(withCopy, opts)
				if !reflect.DeepEqual(r2.Workloads, r3.Workloads) || !reflect.DeepEqual(r2.Orphans, r3.Orphans) {
					rt.Fatalf("a stopping copy of %s on %s changed the pass", o.Name, cp.Machine)
				}
			}
		}
		for _, res := range []Result{r, r2} {
			if !res.Wake.IsZero() && !res.Wake.After(now) {
				rt.Fatalf("wake %v is not after now %v", res.Wake, now)
			}
			observed := map[string]*Pod{}
			for i := range pods {
				observed[pods[i].Name] = &pods[i]
			}
			lost := func(p *Pod) bool {
				return p.Machine == "m9" || p.Machine == "m1" && !machines[1].Reachable && now.Sub(machines[1].UnreachableSince) >= time.Minute
			}
			wanted := map[string]bool{}
			// No pass takes more available pods of a rolling Deployment
			// away than maxUnavailable allows.
			if !recreate && (dSurge > 0 || dUnav > 0) {
				available := func(p *Pod) bool {
					return p.Labels[LabelOwnerName] == "d" && p.Labels[LabelOwnerKind] == "Deployment" && p.Phase == corev1.PodRunning && p.Ready && !p.Terminating &&
						(p.Machine == "m0" || p.Machine == "m2" || p.Machine == "m1" && machines[1].Reachable) &&
						!now.Before(p.ReadySince.Add(time.Duration(dMinReady)*time.Second))
				}
				var before, taken int32
				for i := range pods {
					if available(&pods[i]) {
						before++
					}
				}
				for _, s := range workloadOf(rt, res, "Deployment", "d").Stop {
					if available(observed[s.Name]) {
						taken++
					}
				}
				if floor := min(before, dR-dUnav); before-taken < floor {
					rt.Fatalf("stopped %d of %d available pods; %d must stay (replicas %d, maxUnavailable %d)", taken, before, floor, dR, dUnav)
				}
			}
			// Nor more machines of a DaemonSet without an available pod.
			if dsSurge > 0 || dsUnav > 0 {
				maxUnav := max(dsUnav, boolInt32(dsSurge == 0 && dsUnav == 0))
				dsAvailable := func(p *Pod) bool {
					return p.Labels[LabelOwnerKind] == "DaemonSet" && p.Phase == corev1.PodRunning && p.Ready && !p.Terminating &&
						(p.Machine == "m0" || p.Machine == "m2" || p.Machine == "m1" && machines[1].Reachable)
				}
				w := workloadOf(rt, res, "DaemonSet", "ds")
				gone := map[string]bool{}
				for _, s := range w.Stop {
					gone[s.Name] = true
				}
				for _, p := range w.Pods {
					if p.Action == Replace {
						gone[p.Name] = true
					}
				}
				before, after := map[string]bool{}, map[string]bool{}
				for i := range pods {
					if p := &pods[i]; dsAvailable(p) {
						before[p.Machine] = true
						if !gone[p.Name] {
							after[p.Machine] = true
						}
					}
				}
				if floor := min(len(before), 3-int(maxUnav)); len(after) < floor {
					rt.Fatalf("DaemonSet: %d machines available after the pass, %d before; %d must stay", len(after), len(before), floor)
				}
			}
			// An ordered StatefulSet starts a pod only after all before it
			// are running and ready, and changes one pod at a time.
			if !stsParallel {
				w := workloadOf(rt, res, "StatefulSet", "s")
				changes := 0
				for _, p := range w.Pods {
					if p.Action == Keep {
						continue
					}
					changes++
					ord, _ := ordinalOf("s", p.Name)
					for i := int32(0); i < ord; i++ {
						o := observed["s-"+itoa(i)]
						if o == nil || o.Terminating || o.Phase != corev1.PodRunning || !o.Ready || o.Machine == "m9" || o.Machine == "m1" && !machines[1].Reachable {
							rt.Fatalf("StatefulSet: %s %s before s-%d is running and ready", p.Action, p.Name, i)
						}
					}
				}
				for _, s := range w.Stop {
					// Clearing finished, stray or lost pods is not a step.
					_, isOrd := ordinalOf("s", s.Name)
					if o := observed[s.Name]; isOrd && o.Phase != corev1.PodFailed && o.Phase != corev1.PodSucceeded && o.Machine != "m9" {
						changes++
					}
				}
				if changes > 1 {
					rt.Fatalf("StatefulSet: %d steps in one ordered pass: %+v, stop %v", changes, w.Pods, w.Stop)
				}
			}
			// A Job runs at most parallelism pods, one per index.
			{
				active := 0
				indexes := map[string]bool{}
				for _, p := range workloadOf(rt, res, "Job", "j").Pods {
					o := observed[p.Name]
					if p.Action == Keep && (o.Phase == corev1.PodSucceeded || o.Phase == corev1.PodFailed) {
						continue
					}
					active++
					idx := ""
					if p.Template != nil {
						idx = p.Template.Labels[LabelJobCompletionIndex]
					} else {
						idx = o.Labels[LabelJobCompletionIndex]
					}
					if indexes[idx] && idx != "" && jobIndexed {
						rt.Fatalf("two running pods for index %s", idx)
					}
					indexes[idx] = true
				}
				if active > int(jobPar) {
					rt.Fatalf("Job runs %d pods > parallelism %d", active, jobPar)
				}
			}
			for _, w := range res.Workloads {
				stopped := map[string]bool{}
				for _, p := range w.Pods {
					if p.Owner != w.Owner {
						rt.Fatalf("%s wants %s owned by %s", w.Owner, p.Name, p.Owner)
					}
				}
				for _, s := range w.Stop {
					if observed[s.Name] == nil {
						rt.Fatalf("%s stops %s, which is not there", w.Owner, s.Name)
					}
					stopped[s.Name] = true
				}
				for _, p := range w.Pods {
					if wanted[p.Name] {
						rt.Fatalf("%s wanted twice", p.Name)
					}
					wanted[p.Name] = true
					if stopped[p.Name] {
						rt.Fatalf("%s both wanted and stopped", p.Name)
					}
					o := observed[p.Name]
					switch p.Action {
					case Create:
						if o != nil && !lost(o) {
							rt.Fatalf("%s creates %s over an observed pod (%+v)", w.Owner, p.Name, *o)
						}
						if p.Template == nil {
							rt.Fatalf("%s creates %s without a template", w.Owner, p.Name)
						}
					case Replace:
						if o == nil || o.Terminating || p.Machine != o.Machine {
							rt.Fatalf("%s replaces %s, which is not there to replace", w.Owner, p.Name)
						}
					case Keep:
						if o == nil || o.Terminating {
							rt.Fatalf("%s keeps %s, which is not there or stopping", w.Owner, p.Name)
						}
					}
				}
			}
			for _, o := range res.Orphans {
				if wanted[o.Name] {
					rt.Fatalf("orphan %s is wanted", o.Name)
				}
				wanted[o.Name] = true
			}
			for _, w := range res.Workloads {
				for _, s := range w.Stop {
					wanted[s.Name] = true
				}
			}
			for _, p := range pods {
				if !p.Terminating && !wanted[p.Name] {
					rt.Fatalf("observed pod %s neither wanted nor stopped", p.Name)
				}
			}
		}
	})
}

// snapshot deep-copies what a pass must not modify.
func snapshot(in Input) []any {
	out := []any{}
	for _, o := range in.Objects {
		out = append(out, o.Obj.(runtime.Object).DeepCopyObject())
	}
	for _, p := range in.Pods {
		p.Labels = maps.Clone(p.Labels)
		p.Containers = slices.Clone(p.Containers)
		out = append(out, p)
	}
	b, _ := json.Marshal(in.Memory)
	return append(out, string(b), slices.Clone(in.Machines))
}

func boolInt32(b bool) int32 {
	if b {
		return 1
	}
	return 0
}
