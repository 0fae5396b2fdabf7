// dockyard-cadvisor: per-container CPU, memory and network metrics of a Docker host for
// Prometheus, made from cAdvisor's library. cAdvisor's own command is a module the Go
// module proxy does not serve, so localcloud/platform_images.py builds this one instead;
// the metric names are cAdvisor's (container_cpu_usage_seconds_total, ...). It takes the
// library's flags (-housekeeping_interval, -docker_only, -docker, ...) and these:
//
//	-listen ADDRESS                       where /metrics and /healthz answer (:8080)
//	-whitelisted_container_labels A,B     container labels copied onto the metrics
//	-store_container_labels=false         copy only those (the default copies every label)
package main

import (
	"flag"
	"log"
	"net/http"
	"strings"
	"time"

	"github.com/google/cadvisor/cache/memory"
	"github.com/google/cadvisor/container"
	_ "github.com/google/cadvisor/container/docker/install"
	v2 "github.com/google/cadvisor/info/v2"
	"github.com/google/cadvisor/manager"
	"github.com/google/cadvisor/metrics"
	"github.com/google/cadvisor/utils/sysfs"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"k8s.io/utils/clock"
)

func main() {
	listen := flag.String("listen", ":8080", "address of the metrics endpoint")
	storeLabels := flag.Bool("store_container_labels", true, "copy every container label onto its metrics")
	whitelist := flag.String("whitelisted_container_labels", "", "container labels copied onto metrics (comma-separated)")
	flag.Parse()

	included := container.MetricSet{
		container.CpuUsageMetrics:     struct{}{},
		container.MemoryUsageMetrics:  struct{}{},
		container.NetworkUsageMetrics: struct{}{},
		container.DiskIOMetrics:       struct{}{},
	}
	allowDynamic := true
	housekeeping := manager.HousekeepingConfig{Interval: manager.HousekeepingInterval, AllowDynamic: &allowDynamic}
	cache := memory.New(2*time.Minute, nil)
	m, err := manager.New(cache, sysfs.NewRealSysFs(), housekeeping, included, http.DefaultClient,
		[]string{"/"}, nil, "", 0)
	if err != nil {
		log.Fatalf("cadvisor: %v", err)
	}
	if err := m.Start(); err != nil {
		log.Fatalf("cadvisor: %v", err)
	}

	labels := metrics.DefaultContainerLabels
	if !*storeLabels {
		labels = metrics.BaseContainerLabels(strings.Split(*whitelist, ","))
	}
	registry := prometheus.NewRegistry()
	registry.MustRegister(metrics.NewPrometheusCollector(m, labels, included, clock.RealClock{},
		v2.RequestOptions{IdType: v2.TypeName, Count: 1, Recursive: true}))
	http.Handle("/metrics", promhttp.HandlerFor(registry, promhttp.HandlerOpts{}))
	http.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	log.Printf("cadvisor: serving /metrics on %s", *listen)
	log.Fatal(http.ListenAndServe(*listen, nil))
}
