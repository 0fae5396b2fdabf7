// Command promtail ships container logs to Loki. It is Loki's promtail library
// (github.com/grafana/loki/v3/clients/pkg/promtail, the version of the module it is built
// in) behind a small command: Loki 3.6 dropped promtail's own command from its module, and
// the proxy serves no other way to build it here.
//
// Usage: promtail -config.file=FILE [-config.expand-env=true] [-check-syntax] [library flags]
// The file is promtail's YAML configuration, read strictly; flags give the defaults.
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/drone/envsubst"
	"github.com/go-kit/log/level"
	"github.com/prometheus/client_golang/prometheus"
	"gopkg.in/yaml.v2"

	"github.com/grafana/loki/v3/clients/pkg/promtail"
	"github.com/grafana/loki/v3/clients/pkg/promtail/client"
	"github.com/grafana/loki/v3/clients/pkg/promtail/config"
	util_log "github.com/grafana/loki/v3/pkg/util/log"
)

// load reads the configuration; checkOnly is -check-syntax.
func load(args []string) (cfg *config.Config, checkOnly bool, err error) {
	cfg = &config.Config{}
	flags := flag.NewFlagSet("promtail", flag.ContinueOnError)
	file := flags.String("config.file", "", "promtail's YAML configuration")
	expand := flags.Bool("config.expand-env", false, "replace ${VAR} in the file by the environment's VAR")
	check := flags.Bool("check-syntax", false, "read the configuration, report what is wrong in it, and exit")
	cfg.RegisterFlags(flags)
	if err := flags.Parse(args); err != nil {
		return nil, false, err
	}
	if *file == "" {
		return nil, false, fmt.Errorf("-config.file is required")
	}
	text, err := os.ReadFile(*file)
	if err != nil {
		return nil, false, err
	}
	if *expand {
		// as upstream's command: ${VAR}, ${VAR:-default}; $$ for a literal $
		expanded, err := envsubst.EvalEnv(string(text))
		if err != nil {
			return nil, false, fmt.Errorf("%s: %w", *file, err)
		}
		text = []byte(expanded)
	}
	if err := yaml.UnmarshalStrict(text, cfg); err != nil {
		return nil, false, fmt.Errorf("%s: %w", *file, err)
	}
	// flags given on the command line win over the file, as in upstream's command
	if err := flags.Parse(args); err != nil {
		return nil, false, err
	}
	return cfg, *check, cfg.Validate()
}

func main() {
	cfg, checkOnly, err := load(os.Args[1:])
	if err != nil {
		fmt.Fprintf(os.Stderr, "promtail: %v\n", err)
		os.Exit(2)
	}
	if checkOnly {
		fmt.Println("promtail: the configuration is valid")
		return
	}
	logger := util_log.InitLogger(&cfg.ServerConfig.Config, prometheus.DefaultRegisterer, false)
	// promtail.New applies cfg.Setup itself (applying it twice would add a -client.url twice)
	tail, err := promtail.New(*cfg, nil, client.NewMetrics(prometheus.DefaultRegisterer), false)
	if err != nil {
		level.Error(logger).Log("msg", "cannot start promtail", "err", err)
		os.Exit(1)
	}
	level.Info(logger).Log("msg", "starting promtail")
	// Run returns when its server stops, on SIGTERM or SIGINT too (its own handler); the
	// client then sends what it holds before the process ends
	err = tail.Run()
	tail.Shutdown()
	if err != nil {
		level.Error(logger).Log("msg", "promtail stopped", "err", err)
		os.Exit(1)
	}
}
