# frozen_string_literal: true

# One message, run as Ruby Chore's Worker ran a unit, with each of its outcomes turned into
# a batch result line instead of an ack, a reject or a delay:
#
#   success                         -> "ok" (written where Ruby Chore acked: right after
#                                      perform, before the after_perform hooks)
#   StandardError, job backoff      -> "retry" with delay = backoff.call(unit); on_delay hooks
#   StandardError, attempts left    -> "fail"; on_failure hooks
#   StandardError, attempt >= the job's max_attempts
#                                   -> "permanent"; on_permanent_failure hooks
#   RejectMessageException          -> "retry" (Ruby Chore's reject left the message to be
#                                      redelivered, whatever the attempt); on_rejected hooks
#   a global before_perform hook returned false
#                                   -> "retry" (Ruby Chore left the message unacked)
#   no class, or an unknown one     -> "permanent"; global on_permanent_failure hooks
#   an error outside the job (a hook raised)
#                                   -> "fail", or "permanent" at Chore.config.max_attempts;
#                                      global on_failure / on_permanent_failure hooks
module ChorePreload
  # Runs one Unit and reports exactly one result for it through `report`.
  class JobRunner
    BACKTRACE_LINES = 3

    def initialize(unit, report)
      @unit = unit
      @report = report
      @reported = false
    end

    def run
      klass = job_class
      return unless klass

      @unit.klass = klass
      Chore.run_hooks_for(:worker_to_start, @unit)
      start_item(klass)
    rescue StandardError => e
      outside_failure(e)
    end

    private

    # Resolves the body's class; reports a permanent failure when there is none.
    def job_class
      body = @unit.decoded_message
      name = body['class'] if body.is_a?(Hash)
      unless name.is_a?(String) && !name.empty?
        return unrunnable('the body has no job class (a Ruby Chore job is {"class":"Name","args":[...]})')
      end

      klass = Object.const_get(name.delete_prefix('::'))
      return klass if klass.respond_to?(:perform)

      unrunnable("`#{name}` is not a job class: it has no perform method")
    rescue NameError => e
      unrunnable("unknown job class `#{name}` (#{describe(e, backtrace: false)})")
    end

    def unrunnable(error)
      run_global_hooks_safely(:on_permanent_failure, @unit.queue_name, @unit.message, RuntimeError.new(error))
      report('permanent', error: error)
      nil
    end

    def start_item(klass)
      decoded = @unit.decoded_message
      if job_hooks(klass, :before_perform, decoded) == false
        return report('retry', error: 'not run: a before_perform hook returned false')
      end

      begin
        args = decoded['args']
        Chore.run_hooks_for(:around_perform, klass, decoded) { klass.perform(*args) }
        report('ok')
        job_hooks(klass, :after_perform, decoded)
        Chore.run_hooks_for(:worker_ended, @unit)
      rescue Chore::Job::RejectMessageException => e
        report('retry', error: "the job rejected its message (#{describe(e, backtrace: false)})")
        job_hooks(klass, :on_rejected, decoded)
      rescue StandardError => e
        backoff(klass, e) || handle_failure(klass, e)
      rescue Exception => e # rubocop:disable Lint/RescueException -- reported, then re-raised
        report('fail', error: describe(e))
        raise
      end
    end

    # A job with a `:backoff` option asks for a delay instead of the queue's backoff.
    # Returns nil, so that handle_failure runs, when there is none or it does not give a
    # number of seconds.
    def backoff(klass, error)
      proc = job_options(klass)[:backoff]
      return unless proc

      delay = Integer(proc.call(@unit))
      return if delay.negative?

      report('retry', delay: delay, error: describe(error))
      job_hooks(klass, :on_delay, @unit.decoded_message)
      true
    rescue StandardError => e
      warn "chore-preload: #{klass}'s backoff failed (#{describe(e, backtrace: false)}); handled as a failure"
      nil
    end

    def handle_failure(klass, error)
      decoded = @unit.decoded_message
      max = job_options(klass)[:max_attempts] || Float::INFINITY
      if @unit.current_attempt >= max
        job_hooks(klass, :on_permanent_failure, @unit.queue_name, decoded, error)
        report('permanent', error: "attempt #{@unit.current_attempt} of #{klass}'s max_attempts #{max}: #{describe(error)}")
      else
        job_hooks(klass, :on_failure, decoded, error)
        report('fail', error: describe(error))
      end
    end

    # Ruby Chore's outer rescue: anything raised outside the job itself (a before_perform
    # or failure hook, worker_to_start), judged against the global max_attempts.
    def outside_failure(error)
      if @unit.current_attempt >= (Chore.config.max_attempts || Float::INFINITY)
        run_global_hooks_safely(:on_permanent_failure, @unit.queue_name, @unit.message, error)
        report('permanent', error: describe(error))
      else
        run_global_hooks_safely(:on_failure, @unit.message, error)
        report('fail', error: describe(error))
      end
    end

    def run_global_hooks_safely(event, *args)
      Chore.run_hooks_for(event, *args)
    rescue StandardError => e
      warn "chore-preload: a global #{event} hook failed: #{describe(e)}"
    end

    # The job's hooks: the class's own run_hooks_for (global hooks, then its hook methods)
    # when it includes Chore::Job; for any other class with a perform, the global ones only.
    def job_hooks(klass, event, *args)
      return klass.run_hooks_for(event, *args) if klass.respond_to?(:run_hooks_for)

      results = Chore.run_hooks_for(event, *args)
      results.is_a?(Array) && results.include?(false) ? false : results
    end

    def job_options(klass)
      return {} unless klass.singleton_class.include?(Chore::Job::ClassMethods)

      klass.options || {}
    rescue StandardError
      {} # e.g. the gem's queue_options raising for a missing publisher
    end

    # Once per message: a second outcome (after_perform raising after "ok") only runs the
    # hooks, as in Ruby Chore where the message was already acked.
    def report(result, error: nil, delay: nil)
      if @reported
        warn "chore-preload: #{@unit.id}: after #{@reported}: #{error}" if error
        return
      end
      @reported = result
      @report.call({ id: @unit.id, result: result, delay: delay, error: error }.compact)
    end

    # "Class: message at file:line:in `m' | file:line:in `n'", on one line, valid UTF-8.
    def describe(error, backtrace: true)
      text = "#{error.class}: #{error.message}"
      lines = backtrace ? (error.backtrace || []).first(BACKTRACE_LINES) : []
      text += " at #{lines.join(' | ')}" unless lines.empty?
      text = text.encode(Encoding::UTF_8, invalid: :replace, undef: :replace) unless text.encoding == Encoding::UTF_8
      text.scrub.gsub(/\s*\n\s*/, ' ')
    end
  end
end
