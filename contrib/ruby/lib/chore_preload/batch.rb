# frozen_string_literal: true

# The batch-mode protocol of docs/handlers.md, as spoken by a forked child: one JSON line
# per message on the input until end of file, one result line per message on the output as
# soon as it is known, flushed at once (chore settles each message when its line arrives).
require 'json'
require_relative 'job_runner'

module ChorePreload
  # Ruby Chore's UnitOfWork, as far as the batch protocol can fill it: what a `:backoff`
  # proc and the worker_to_start / worker_ended / fetched_off_internal_q hooks are given.
  # `id` is chore's message id; receipt_handle, queue_timeout and consumer have no
  # equivalent here and stay nil.
  Unit = Struct.new(:id, :receipt_handle, :queue_name, :queue_timeout, :message,
                    :previous_attempts, :consumer, :decoded_message, :klass,
                    :received_timestamp) do
    def current_attempt
      previous_attempts + 1
    end
  end

  # One batch: what the fork hooks receive in place of Ruby Chore's Worker (`work` fills
  # with Units as lines are read), and the loop that runs it in the child.
  Batch = Struct.new(:pgid, :messages, :started_at, :work) do
    def run(input, output)
      input.each_line do |line|
        unit = unit_from(line)
        next unless unit

        work << unit
        Chore.run_hooks_for(:fetched_off_internal_q, unit)
        JobRunner.new(unit, ->(result) { report(output, result) }).run
      end
    end

    private

    def unit_from(line)
      return if line.strip.empty?

      msg = JSON.parse(line)
      attempt = msg['attempt'].is_a?(Integer) ? msg['attempt'] : 1
      Unit.new(msg['id'], nil, msg['queue'], nil, JSON.generate(msg['body']), attempt - 1,
               nil, msg['body'], nil, Time.now)
    rescue JSON::ParserError => e
      # Without an id nothing can be reported; chore counts the message as failed.
      warn "chore-preload: not a batch input line (#{e.message}): #{line.strip[0, 200]}"
      nil
    end

    def report(output, result)
      output.write("#{JSON.generate(result)}\n")
      output.flush
    end
  end
end
