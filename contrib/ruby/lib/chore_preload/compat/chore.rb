# frozen_string_literal: true

# A stand-in for the chore-core gem's job API, for applications that run under
# chore-preload without the gem. It is loaded only when `require 'chore'` cannot find the
# gem (see ChorePreload::Boot), so that this file's directory answers `require 'chore'` in
# the application and `include Chore::Job` works in its job classes. It covers what a job
# class and an initializer use: Chore.config / configure / logger, the global hooks
# (add_hook, hooks_for, run_hooks_for, clear_hooks!), and Chore::Job with its class
# methods and per-class hook methods. Publishing (perform_async) works only when the
# application gives a publisher object; this file ships none.
require 'json'
require 'logger'
require 'ostruct'

module Chore
  # Ruby Chore's configuration object: an OpenStruct that unknown keys are welcome in.
  class Configuration < OpenStruct
    def merge_hash(hash = {})
      hash.each { |key, value| self[key.to_sym] = value }
      self
    end
  end

  DEFAULT_OPTIONS = {
    require: './',
    max_attempts: Float::INFINITY,
    batch_size: 50,
    shutdown_timeout: 120
  }.freeze

  class << self
    attr_writer :logger

    # Standard error, not standard output as in the gem: in a batch child standard output
    # is the channel of result lines, and a log line there would only be copied to the log
    # with a warning.
    def logger
      @logger ||= Logger.new($stderr)
    end

    def configure(opts = {})
      @config = if @config
                  @config.merge_hash(opts)
                else
                  Configuration.new(DEFAULT_OPTIONS.merge(opts))
                end
      yield @config if block_given?
      @config
    end

    def config
      @config ||= configure
    end

    def add_hook(name, &blk)
      (hooks[name.to_sym] ||= []) << blk
    end

    def hooks_for(name)
      hooks[name.to_sym] || []
    end

    def clear_hooks!
      @hooks = {}
    end

    # Without a block, calls every global hook for `name` in the order they were added and
    # returns their results. With a block (around hooks), nests them: the first hook's code
    # before its yield runs first, then the second's, ..., then the block, then the code
    # after each yield in reverse order. A hook that does not yield stops the block.
    def run_hooks_for(name, *args, &block)
      list = hooks_for(name)
      return list.map { |hook| hook.call(*args) } unless block

      list.reverse.inject(block) { |inner, hook| -> { hook.call(*args) { inner.call } } }.call
    end

    private

    def hooks
      @hooks ||= {}
    end
  end

  # Per-class hooks: class methods whose names start with the event's name
  # (`def self.before_perform_log(message)`), run in alphabetical order after the global
  # hooks of the same name. The gem extends each job class with this module.
  module Hooks
    # Returns false when a hook returned exactly false. As in the gem, only a global hook
    # can do that: the class methods' results are appended as one nested list.
    def run_hooks_for(event, *args)
      results = Chore.hooks_for(event).map { |hook| hook.call(*args) }
      results << chore_hook_methods(event).map { |name| send(name, *args) }
      results.include?(false) ? false : results
    end

    private

    def chore_hook_methods(event)
      (methods - Object.methods).grep(/\A#{Regexp.escape(event.to_s)}/).sort
    end
  end

  # `include Chore::Job` in a job class.
  module Job
    # Raised by a job to reject its message; see ChorePreload::JobRunner for what that means.
    class RejectMessageException < Exception # rubocop:disable Lint/InheritException
    end

    def self.job_classes
      @job_classes || []
    end

    def self.included(base)
      (@job_classes ||= []) << base.name
      base.extend(ClassMethods)
      base.extend(Hooks)
    end

    # The gem's payload handler functions, for code that calls them directly.
    def self.decode(data)
      JSON.parse(data)
    end

    def self.payload_class(message)
      Object.const_get(message['class'].to_s.delete_prefix('::'))
    end

    def self.payload(message)
      message['args']
    end

    # The class methods a job gets.
    module ClassMethods
      # Merges into the job's options. Unlike the gem, only :name is required: a process
      # that only runs jobs needs no publisher, and max_attempts defaults to
      # Chore.config.max_attempts (infinite unless the application set it).
      def queue_options(opts = {})
        from_config = { max_attempts: Chore.config.max_attempts }
        from_config[:publisher] = Chore.config.publisher if Chore.config.publisher
        @chore_options = (@chore_options || {}).merge(from_config).merge(opts)
        raise ArgumentError, "#{self} :name is a required option for Chore::Job" unless @chore_options[:name]

        check_chore_procs(@chore_options)
        @chore_options
      end

      def options
        @chore_options ||= queue_options
      end

      def required_options
        [:name]
      end

      def perform(*args)
        new(args).perform(*args)
      end

      def perform_async(*args)
        new(args).perform_async(*args)
      end

      def job_hash(job_params)
        { class: to_s, args: job_params }
      end

      def prefixed_queue_name
        "#{Chore.config.queue_prefix}#{options[:name]}"
      end

      def has_backoff? # rubocop:disable Naming/PredicateName
        options.key?(:backoff)
      end

      def has_dedupe_lambda? # rubocop:disable Naming/PredicateName
        options.key?(:dedupe_lambda)
      end

      def dedupe_key(*args)
        options[:dedupe_lambda]&.call(*args)&.to_s
      end

      private

      def check_chore_procs(options)
        if options.key?(:backoff)
          backoff = options[:backoff]
          raise ArgumentError, "#{self}: backoff must be a lambda or Proc" unless backoff.is_a?(Proc)
          raise ArgumentError, "#{self}: backoff must accept a single argument" unless backoff.arity == 1
        end
        return if !options.key?(:dedupe_lambda) || options[:dedupe_lambda].is_a?(Proc)

        raise ArgumentError, "#{self}: dedupe_lambda must be a lambda or Proc"
      end
    end

    # A hook for per-job setup: the instance is built with the whole args Array.
    def initialize(args = nil); end

    def perform(*_args)
      raise NotImplementedError, "#{self.class} must define perform"
    end

    def perform_async(*args)
      self.class.run_hooks_for(:before_publish, *args)
      publisher = self.class.options[:publisher]
      unless publisher
        raise NotImplementedError,
              "#{self.class}.perform_async needs a publisher (queue_options publisher: or Chore.config.publisher)"
      end
      queue = self.class.prefixed_queue_name
      job = self.class.job_hash(args)
      Chore.run_hooks_for(:around_publish, queue, job) { publisher.publish(queue, job) }
      self.class.run_hooks_for(:after_publish, *args)
    end
  end
end
