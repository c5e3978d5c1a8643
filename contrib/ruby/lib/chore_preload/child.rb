# frozen_string_literal: true

# The forked child, from the fork to its exit: join the worker's process group, take the
# received descriptors as stdin/stdout/stderr, drop what belongs to the preloader, then run
# the batch inside the fork hooks the way Ruby Chore's forked worker did (within_fork
# around after_fork + the work, before_fork_shutdown always, then exit! without at_exit
# handlers, so nothing the preloader registered runs twice).
module ChorePreload
  # One batch child.
  class Child
    def initialize(batch, fds, preloader_ios, memory_limit = nil)
      @batch = batch
      @fds = fds
      @preloader_ios = preloader_ios
      @memory_limit = memory_limit
    end

    def run
      # First: chore's deadline kill is a SIGKILL to the worker's group, and it must reach us.
      Process.setpgid(0, @batch.pgid)
      # The queue's memory-limit, as chore sets it for the handlers it starts itself: the
      # data limit, soft and hard, so the batch cannot raise it.
      Process.setrlimit(:DATA, @memory_limit, @memory_limit) if @memory_limit
      # Back to Ruby's defaults (TERM kills the batch, INT raises Interrupt) before the
      # preloader's handler, which writes to a pipe closed below, can run here.
      %w[TERM INT].each { |sig| trap(sig, 'DEFAULT') }
      take_descriptors
      Process.setproctitle("chore-preload-batch:Started:#{@batch.started_at}")
      exit!(run_hooks_and_batch)
    rescue Exception => e # rubocop:disable Lint/RescueException -- nothing may escape into the preloader's code
      warn "chore-preload: batch child #{Process.pid} failed: #{e.class}: #{e.message}"
      exit!(1)
    end

    private

    def take_descriptors
      input, output, log = @fds
      STDIN.reopen(input)
      STDOUT.reopen(output)
      STDERR.reopen(log)
      (@fds + @preloader_ios).each { |io| io.close unless io.closed? }
      STDIN.binmode.set_encoding(Encoding::UTF_8) # whatever the locale: the lines are UTF-8 JSON
      STDOUT.sync = true # the application's own prints go out before exit!, too
    end

    # Returns the exit status. A within_fork hook that never yields ends the child with
    # nothing run, as in Ruby Chore.
    def run_hooks_and_batch
      status = 0
      Chore.run_hooks_for(:within_fork, @batch) do
        Chore.run_hooks_for(:after_fork, @batch)
        @batch.run(STDIN, STDOUT)
      rescue Exception => e # rubocop:disable Lint/RescueException -- see below
        # Something that is not a StandardError left a job (NotImplementedError, exit,
        # NoMemoryError): as in Ruby Chore the rest of the batch is abandoned, and chore
        # counts each message without a result as failed.
        warn "chore-preload: batch abandoned: #{e.class}: #{e.message}"
        status = 1
      ensure
        finish(status)
      end
      status
    end

    # Ruby Chore exits inside within_fork, so the code after a within_fork hook's yield
    # never runs; same here.
    def finish(status)
      Chore.run_hooks_for(:before_fork_shutdown)
    rescue StandardError => e
      warn "chore-preload: a before_fork_shutdown hook failed: #{e.class}: #{e.message}"
    ensure
      begin
        STDOUT.flush
      rescue SystemCallError, IOError
        nil # chore stopped reading; nothing more can be reported
      end
      exit!(status)
    end
  end
end
