// optiinfra offline Python language host.
//
// A small stand-in for `pulumi-language-python`, written for this project because the real language host module is
// not available from the Go module proxy reachable here. It speaks the LanguageRuntime gRPC protocol using only
// published packages of github.com/pulumi/pulumi/sdk/v3 (pulumirpc, python/toolchain, rpcutil, PolicyProxy) and runs
// programs through the `pulumi-language-python-exec` script that ships in that module.
//
// Differences from the upstream host, on purpose:
//   - GetRequiredPackages/GetRequiredPlugins report nothing, so the engine never tries to download provider plugins
//     for every Pulumi SDK that happens to be installed in the virtualenv; providers are resolved lazily when a
//     resource asks for them (ambient `pulumi-resource-*` on PATH, or the plugin cache).
//   - No typechecker, debugger, codegen, packing or linking support.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	sdk "github.com/pulumi/pulumi/sdk/v3"
	"github.com/pulumi/pulumi/sdk/v3/go/common/util/cmdutil"
	"github.com/pulumi/pulumi/sdk/v3/go/common/util/logging"
	"github.com/pulumi/pulumi/sdk/v3/go/common/util/rpcutil"
	"github.com/pulumi/pulumi/sdk/v3/go/common/version"
	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"
	"github.com/pulumi/pulumi/sdk/v3/python/toolchain"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/emptypb"
)

// Exit code used by the exec shim after it has already shown the user an actionable error.
const bailExitCode = 32

type langHost struct {
	pulumirpc.UnimplementedLanguageRuntimeServer

	execShim string
	engine   string
	tracing  string

	stop     context.Context // cancelled by the Cancel RPC or on shutdown; parent of program runs
	stopFunc context.CancelFunc
	shutdown func() // stops the gRPC server (engine gone or interrupted)
}

func main() {
	tracing := flag.String("tracing", "", "Zipkin-compatible tracing endpoint")
	printVersion := flag.Bool("version", false, "print the version and exit")
	executor := flag.String("use-executor", "", "path of the pulumi-language-python-exec script")
	flag.Parse()

	if *printVersion {
		fmt.Println(version.Version)
		return
	}
	logging.InitLogging(false, 0, false)

	shim := *executor
	if shim == "" {
		self, err := os.Executable()
		if err != nil {
			cmdutil.Exit(fmt.Errorf("locating own executable: %w", err))
		}
		shim = filepath.Join(filepath.Dir(self), "pulumi-language-python-exec")
	}
	if _, err := os.Stat(shim); err != nil {
		cmdutil.Exit(fmt.Errorf("python exec shim not found: %w", err))
	}

	stop, stopFunc := context.WithCancel(context.Background())
	cancel := make(chan bool)
	shutdown := sync.OnceFunc(func() {
		stopFunc()
		close(cancel)
	})
	h := &langHost{execShim: shim, tracing: *tracing, stop: stop, stopFunc: stopFunc, shutdown: shutdown}

	sigCtx, sigStop := signal.NotifyContext(context.Background(), os.Interrupt)
	go func() {
		<-sigCtx.Done()
		sigStop()
		shutdown()
	}()

	if args := flag.Args(); len(args) > 0 {
		h.engine = args[0]
		if err := rpcutil.Healthcheck(context.Background(), h.engine, 5*time.Minute, shutdown); err != nil {
			cmdutil.Exit(fmt.Errorf("engine health check: %w", err))
		}
	}

	handle, err := rpcutil.ServeWithOptions(rpcutil.ServeOptions{
		Cancel: cancel,
		Init: func(srv *grpc.Server) error {
			pulumirpc.RegisterLanguageRuntimeServer(srv, h)
			return nil
		},
	})
	if err != nil {
		cmdutil.Exit(fmt.Errorf("starting language host server: %w", err))
	}
	fmt.Printf("%d\n", handle.Port)
	if err := <-handle.Done; err != nil {
		cmdutil.Exit(fmt.Errorf("language host server stopped: %w", err))
	}
}

// pythonOptions turns the `runtime.options` block of Pulumi.yaml / PulumiPolicy.yaml into toolchain options.
// resolveToolchain is the Python toolchain a program or plugin runs with.
func resolveToolchain(info *pulumirpc.ProgramInfo, defaultVenv string) (toolchain.Toolchain, error) {
	opts, err := pythonOptions(info, defaultVenv)
	if err != nil {
		return nil, err
	}
	return toolchain.ResolveToolchain(opts)
}

func pythonOptions(info *pulumirpc.ProgramInfo, defaultVenv string) (toolchain.PythonOptions, error) {
	opts := toolchain.PythonOptions{Root: info.GetRootDirectory(), ProgramDir: info.GetProgramDirectory()}
	raw := info.GetOptions().AsMap()
	str := func(key string) (string, error) {
		v, ok := raw[key]
		if !ok {
			return "", nil
		}
		s, ok := v.(string)
		if !ok {
			return "", fmt.Errorf("runtime option %q must be a string", key)
		}
		return s, nil
	}
	venv, err := str("virtualenv")
	if err != nil {
		return opts, err
	}
	opts.Virtualenv = venv
	tc, err := str("toolchain")
	if err != nil {
		return opts, err
	}
	switch tc {
	case "":
		opts.Toolchain = toolchain.Auto
	case "pip":
		opts.Toolchain = toolchain.Pip
	case "poetry":
		opts.Toolchain = toolchain.Poetry
	case "uv":
		opts.Toolchain = toolchain.Uv
	default:
		return opts, fmt.Errorf("unsupported toolchain %q", tc)
	}
	if checker, _ := str("typechecker"); checker != "" {
		logging.Warningf("runtime option typechecker=%s is ignored by this language host", checker)
	}
	if opts.Virtualenv == "" && defaultVenv != "" &&
		(opts.Toolchain == toolchain.Pip || opts.Toolchain == toolchain.Auto) {
		opts.Virtualenv = defaultVenv
	}
	return opts, nil
}

func (h *langHost) Handshake(ctx context.Context, req *pulumirpc.LanguageHandshakeRequest,
) (*pulumirpc.LanguageHandshakeResponse, error) {
	h.engine = req.GetEngineAddress()
	if h.engine != "" {
		if err := rpcutil.Healthcheck(context.Background(), h.engine, 5*time.Minute, h.shutdown); err != nil {
			return nil, fmt.Errorf("engine health check: %w", err)
		}
	}
	return &pulumirpc.LanguageHandshakeResponse{}, nil
}

func (h *langHost) GetPluginInfo(context.Context, *emptypb.Empty) (*pulumirpc.PluginInfo, error) {
	return &pulumirpc.PluginInfo{Version: version.Version}, nil
}

func (h *langHost) GetRequiredPlugins(context.Context, *pulumirpc.GetRequiredPluginsRequest,
) (*pulumirpc.GetRequiredPluginsResponse, error) {
	return &pulumirpc.GetRequiredPluginsResponse{}, nil
}

func (h *langHost) GetRequiredPackages(context.Context, *pulumirpc.GetRequiredPackagesRequest,
) (*pulumirpc.GetRequiredPackagesResponse, error) {
	return &pulumirpc.GetRequiredPackagesResponse{}, nil
}

func (h *langHost) Cancel(context.Context, *emptypb.Empty) (*emptypb.Empty, error) {
	h.stopFunc()
	return &emptypb.Empty{}, nil
}

func (h *langHost) Run(ctx context.Context, req *pulumirpc.RunRequest) (*pulumirpc.RunResponse, error) {
	tc, err := resolveToolchain(req.GetInfo(), "")
	if err != nil {
		return nil, err
	}
	if err := tc.ValidateVenv(ctx); err != nil {
		return nil, err
	}

	args := []string{h.execShim}
	flagArg := func(name, value string) {
		if value != "" {
			args = append(args, "--"+name, value)
		}
	}
	flagArg("monitor", req.GetMonitorAddress())
	flagArg("engine", h.engine)
	flagArg("project", req.GetProject())
	flagArg("root_directory", req.GetInfo().GetRootDirectory())
	flagArg("stack", req.GetStack())
	flagArg("pwd", req.GetPwd())
	flagArg("dry_run", strconv.FormatBool(req.GetDryRun()))
	flagArg("parallel", strconv.Itoa(int(req.GetParallel())))
	flagArg("tracing", h.tracing)
	flagArg("organization", req.GetOrganization())
	entry := req.GetInfo().GetEntryPoint()
	if entry == "" {
		entry = "."
	}
	args = append(args, entry)
	args = append(args, req.GetArgs()...)

	runCtx, runCancel := context.WithCancel(h.stop)
	defer runCancel()
	context.AfterFunc(ctx, runCancel)
	cmd, err := tc.Command(runCtx, args...)
	if err != nil {
		return nil, err
	}
	// When the engine abandons the run (e.g. a mandatory policy failed) stop the program with SIGTERM: unlike SIGINT
	// it does not make Python print a KeyboardInterrupt traceback into the update's diagnostics.
	cmd.Cancel = func() error {
		if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
			return cmd.Process.Kill()
		}
		return nil
	}
	cmd.WaitDelay = 5 * time.Second
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr

	env := cmd.Env
	if env == nil {
		env = os.Environ()
	}
	if cfg := req.GetConfig(); cfg != nil {
		b, err := json.Marshal(cfg)
		if err != nil {
			return nil, fmt.Errorf("serializing config: %w", err)
		}
		env = append(env, "PULUMI_CONFIG="+string(b))
	}
	secretKeys := req.GetConfigSecretKeys()
	if secretKeys == nil {
		secretKeys = []string{}
	}
	b, err := json.Marshal(secretKeys)
	if err != nil {
		return nil, fmt.Errorf("serializing config secret keys: %w", err)
	}
	env = append(env, "PULUMI_CONFIG_SECRET_KEYS="+string(b))
	cmd.Env = env

	logging.V(5).Infof("python language host running %v", cmd.Args)
	if err := cmd.Run(); err != nil {
		_ = os.Stdout.Sync()
		_ = os.Stderr.Sync()
		var exitErr *exec.ExitError
		if errors.As(err, &exitErr) {
			code := exitErr.ExitCode()
			if code == bailExitCode {
				return &pulumirpc.RunResponse{Bail: true}, nil
			}
			return &pulumirpc.RunResponse{Error: fmt.Sprintf("program exited with non-zero exit code: %d", code)}, nil
		}
		return &pulumirpc.RunResponse{Error: fmt.Sprintf("could not run the python program: %v", err)}, nil
	}
	return &pulumirpc.RunResponse{}, nil
}

func (h *langHost) RunPlugin(req *pulumirpc.RunPluginRequest, server pulumirpc.LanguageRuntime_RunPluginServer) error {
	ctx := server.Context()
	analyzer := req.GetKind() == "analyzer"
	defaultVenv := "venv" // plugins other than policy packs default to ./venv, like upstream
	if analyzer {
		defaultVenv = ""
	}
	tc, err := resolveToolchain(req.GetInfo(), defaultVenv)
	if err != nil {
		return err
	}
	programDir := req.GetInfo().GetProgramDirectory()

	var args []string
	if analyzer {
		// Policy packs: `python -u -m pulumi.policy <engine args...> <policy pack dir>`.
		args = append(args, "-u", "-m", "pulumi.policy")
		args = append(args, req.GetArgs()...)
		args = append(args, programDir)
	} else {
		if _, err := os.Stat(filepath.Join(programDir, "__main__.py")); err != nil {
			return fmt.Errorf("python plugin in %s has no __main__.py (not supported by this language host)", programDir)
		}
		args = append(args, programDir)
		args = append(args, req.GetArgs()...)
	}
	cmd, err := tc.Command(ctx, args...)
	if err != nil {
		return err
	}

	closer, stdout, stderr, err := rpcutil.MakeRunPluginStreams(server, false)
	if err != nil {
		return err
	}
	defer closer.Close()

	if analyzer {
		cmd.Dir = programDir
	} else {
		cmd.Dir = req.GetPwd()
	}
	if cmd.Env == nil {
		cmd.Env = os.Environ()
	}

	var proxy *sdk.PolicyProxy
	if analyzer {
		// The engine talks to the proxy first (ConfigureStack), which gives us the stack settings the policy
		// pack process needs in its environment; the proxy then forwards everything to the real analyzer.
		var proxied io.Writer
		proxy, proxied, err = sdk.NewPolicyProxy(ctx, stdout)
		if err != nil {
			return fmt.Errorf("starting policy pack proxy: %w", err)
		}
		stdout = proxied
		cfg, err := proxy.AwaitConfiguration(ctx)
		if err != nil {
			return fmt.Errorf("waiting for stack configuration: %w", err)
		}
		if cfg != nil {
			setEnv := func(k, v string) {
				if v != "" {
					cmd.Env = append(cmd.Env, k+"="+v)
				}
			}
			setEnv("PULUMI_ORGANIZATION", cfg.GetOrganization())
			setEnv("PULUMI_PROJECT", cfg.GetProject())
			setEnv("PULUMI_STACK", cfg.GetStack())
			setEnv("PULUMI_DRY_RUN", strconv.FormatBool(cfg.GetDryRun()))
			if c := cfg.GetConfig(); c != nil {
				b, err := json.Marshal(c)
				if err != nil {
					return fmt.Errorf("serializing stack config: %w", err)
				}
				setEnv("PULUMI_CONFIG", string(b))
			}
		}
	}
	cmd.Env = append(cmd.Env, req.GetEnv()...)
	cmd.Stdout, cmd.Stderr = stdout, stderr

	logging.V(5).Infof("python language host running plugin %v in %s", cmd.Args, cmd.Dir)
	if err := cmd.Start(); err != nil {
		if proxy != nil {
			proxy.Abort(err)
		}
		return fmt.Errorf("starting python plugin: %w", err)
	}
	if proxy != nil {
		err = proxy.Attach(ctx, cmd)
	} else {
		err = cmd.Wait()
	}
	if err != nil {
		var exitErr *exec.ExitError
		if errors.As(err, &exitErr) {
			if ws, ok := exitErr.Sys().(syscall.WaitStatus); ok {
				return server.Send(&pulumirpc.RunPluginResponse{
					Output: &pulumirpc.RunPluginResponse_Exitcode{Exitcode: int32(ws.ExitStatus())},
				})
			}
		}
		return fmt.Errorf("python plugin failed: %w", err)
	}
	return closer.Close()
}

func (h *langHost) InstallDependencies(req *pulumirpc.InstallDependenciesRequest,
	server pulumirpc.LanguageRuntime_InstallDependenciesServer,
) error {
	defaultVenv := ""
	if req.GetIsPlugin() {
		defaultVenv = "venv"
	}
	tc, err := resolveToolchain(req.GetInfo(), defaultVenv)
	if err != nil {
		return err
	}
	closer, stdout, stderr, err := rpcutil.MakeInstallDependenciesStreams(server, req.GetIsTerminal())
	if err != nil {
		return err
	}
	defer closer.Close()
	if err := tc.InstallDependencies(server.Context(), req.GetInfo().GetProgramDirectory(),
		req.GetUseLanguageVersionTools(), true, stdout, stderr); err != nil {
		return err
	}
	return closer.Close()
}

func (h *langHost) About(ctx context.Context, req *pulumirpc.AboutRequest) (*pulumirpc.AboutResponse, error) {
	tc, err := resolveToolchain(req.GetInfo(), "")
	if err != nil {
		return nil, err
	}
	info, err := tc.About(ctx)
	if err != nil {
		return nil, err
	}
	return &pulumirpc.AboutResponse{
		Executable: info.PythonExecutable,
		Version:    info.PythonVersion.String(),
		Metadata:   map[string]string{"languageHost": "optiinfra-offline"},
	}, nil
}

func (h *langHost) GetProgramDependencies(ctx context.Context, req *pulumirpc.GetProgramDependenciesRequest,
) (*pulumirpc.GetProgramDependenciesResponse, error) {
	tc, err := resolveToolchain(req.GetInfo(), "")
	if err != nil {
		return nil, err
	}
	pkgs, err := tc.ListPackages(ctx, req.GetTransitiveDependencies())
	if err != nil {
		return nil, err
	}
	deps := make([]*pulumirpc.DependencyInfo, 0, len(pkgs))
	for _, p := range pkgs {
		deps = append(deps, &pulumirpc.DependencyInfo{Name: p.Name, Version: p.Version})
	}
	return &pulumirpc.GetProgramDependenciesResponse{Dependencies: deps}, nil
}
