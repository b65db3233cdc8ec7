/// The OpenAPI 3.1 description of the API, served at `/openapi.yaml`. A test
/// keeps it equal to `docs/openapi.yaml`.
enum OpenAPIDocument {
    static let yaml = #"""
        openapi: 3.1.0
        info:
          title: Tranche API
          version: 1.0.0
          description: |
            Durable batch processing. Every error is application/problem+json (RFC 9457).
            Authenticate with `Authorization: Bearer KEY`; a tenant sees only its own batches.
        servers:
          - url: http://127.0.0.1:8080
        security:
          - bearer: []
        paths:
          /healthz:
            get:
              summary: Liveness
              security: []
              responses:
                "200": {description: alive, content: {application/json: {schema: {$ref: "#/components/schemas/Health"}}}}
          /readyz:
            get:
              summary: Readiness (the store answers)
              security: []
              responses:
                "200": {description: ready, content: {application/json: {schema: {$ref: "#/components/schemas/Health"}}}}
                "503": {$ref: "#/components/responses/Problem"}
          /v1/batches:
            post:
              summary: Create a batch (items inline, or none and upload them next)
              parameters:
                - {name: Idempotency-Key, in: header, required: false, schema: {type: string, maxLength: 255}}
              requestBody:
                required: true
                content:
                  application/json:
                    schema: {$ref: "#/components/schemas/CreateBatch"}
              responses:
                "200":
                  description: Ran synchronously (mode auto at or below the sync threshold, or sync), or a dry run's report
                  content: {application/json: {schema: {$ref: "#/components/schemas/SyncResult"}}}
                "202":
                  description: Queued
                  content: {application/json: {schema: {$ref: "#/components/schemas/Accepted"}}}
                "400": {$ref: "#/components/responses/Problem"}
                "401": {$ref: "#/components/responses/Problem"}
                "409": {$ref: "#/components/responses/Problem"}
                "413": {$ref: "#/components/responses/Problem"}
                "422": {$ref: "#/components/responses/Problem"}
                "429": {$ref: "#/components/responses/Problem"}
            get:
              summary: List batches, newest first
              parameters:
                - {name: type, in: query, schema: {type: string}}
                - {name: status, in: query, schema: {$ref: "#/components/schemas/BatchStatus"}}
                - {name: cursor, in: query, schema: {type: string}}
                - {name: limit, in: query, schema: {type: integer, minimum: 1, maximum: 1000}}
              responses:
                "200":
                  description: A page of batches
                  content:
                    application/json:
                      schema:
                        type: object
                        required: [batches, next_cursor]
                        properties:
                          batches: {type: array, items: {$ref: "#/components/schemas/Batch"}}
                          next_cursor: {type: [string, "null"]}
                "400": {$ref: "#/components/responses/Problem"}
                "401": {$ref: "#/components/responses/Problem"}
          /v1/batches/{id}:
            parameters: [{$ref: "#/components/parameters/id"}]
            get:
              summary: Status, counters, progress, rate, ETA
              responses:
                "200": {description: The batch, content: {application/json: {schema: {$ref: "#/components/schemas/Batch"}}}}
                "404": {$ref: "#/components/responses/Problem"}
            delete:
              summary: Remove an ended batch
              responses:
                "204": {description: Deleted}
                "404": {$ref: "#/components/responses/Problem"}
                "409": {$ref: "#/components/responses/Problem"}
          /v1/batches/{id}/items:
            parameters: [{$ref: "#/components/parameters/id"}]
            post:
              summary: Append items (a JSON array, or an NDJSON stream); idempotent by start_seq
              parameters:
                - {name: start_seq, in: query, schema: {type: integer, minimum: 0}}
              requestBody:
                required: true
                content:
                  application/json: {schema: {type: array}}
                  application/x-ndjson: {schema: {type: string}}
              responses:
                "200": {description: Appended, content: {application/json: {schema: {$ref: "#/components/schemas/AppendResult"}}}}
                "400": {$ref: "#/components/responses/Problem"}
                "404": {$ref: "#/components/responses/Problem"}
                "409": {$ref: "#/components/responses/Problem"}
                "413": {$ref: "#/components/responses/Problem"}
                "429": {$ref: "#/components/responses/Problem"}
            get:
              summary: Per-item results, by seq
              parameters:
                - {name: status, in: query, schema: {$ref: "#/components/schemas/ItemStatus"}}
                - {name: cursor, in: query, schema: {type: string}}
                - {name: limit, in: query, schema: {type: integer, minimum: 1, maximum: 1000}}
                - {name: include, in: query, schema: {type: string, enum: [item]}}
              responses:
                "200":
                  description: A page of items
                  content:
                    application/json:
                      schema:
                        type: object
                        required: [items, next_cursor]
                        properties:
                          items: {type: array, items: {$ref: "#/components/schemas/Item"}}
                          next_cursor: {type: [string, "null"]}
                "404": {$ref: "#/components/responses/Problem"}
          /v1/batches/{id}/seal: {$ref: "#/components/pathItems/Action"}
          /v1/batches/{id}/confirm: {$ref: "#/components/pathItems/Action"}
          /v1/batches/{id}/pause: {$ref: "#/components/pathItems/Action"}
          /v1/batches/{id}/resume: {$ref: "#/components/pathItems/Action"}
          /v1/batches/{id}/cancel: {$ref: "#/components/pathItems/Action"}
          /v1/batches/{id}/retry:
            parameters: [{$ref: "#/components/parameters/id"}]
            post:
              summary: Run failed, skipped and dead items again (or the statuses given)
              requestBody:
                required: false
                content:
                  application/json:
                    schema:
                      type: object
                      properties:
                        statuses: {type: array, items: {$ref: "#/components/schemas/ItemStatus"}}
              responses:
                "200": {description: The batch, content: {application/json: {schema: {$ref: "#/components/schemas/Batch"}}}}
                "404": {$ref: "#/components/responses/Problem"}
                "409": {$ref: "#/components/responses/Problem"}
          /v1/batches/{id}/errors:
            parameters: [{$ref: "#/components/parameters/id"}]
            get:
              summary: Errors grouped by code, with samples
              responses:
                "200":
                  description: Error groups
                  content:
                    application/json:
                      schema:
                        type: object
                        required: [errors]
                        properties:
                          errors: {type: array, items: {$ref: "#/components/schemas/ErrorGroup"}}
                "404": {$ref: "#/components/responses/Problem"}
          /v1/batches/{id}/events:
            parameters: [{$ref: "#/components/parameters/id"}]
            get:
              summary: The batch's history
              parameters:
                - {name: after, in: query, schema: {type: integer}}
                - {name: limit, in: query, schema: {type: integer, minimum: 1, maximum: 1000}}
              responses:
                "200":
                  description: Events, oldest first
                  content:
                    application/json:
                      schema:
                        type: object
                        required: [events]
                        properties:
                          events: {type: array, items: {$ref: "#/components/schemas/Event"}}
                "404": {$ref: "#/components/responses/Problem"}
          /v1/batches/{id}/events/stream:
            parameters: [{$ref: "#/components/parameters/id"}]
            get:
              summary: The batch's events as Server-Sent Events; reconnect with Last-Event-ID to miss nothing
              parameters:
                - {name: Last-Event-ID, in: header, schema: {type: integer}}
                - {name: after, in: query, schema: {type: integer}}
              responses:
                "200": {description: "An event stream: id (stored events), event (the type), data (an Event)", content: {text/event-stream: {schema: {type: string}}}}
                "404": {$ref: "#/components/responses/Problem"}
          /v1/events/stream:
            get:
              summary: Every event of the caller's batches as Server-Sent Events
              parameters:
                - {name: Last-Event-ID, in: header, schema: {type: integer}}
                - {name: after, in: query, schema: {type: integer}}
              responses:
                "200": {description: An event stream, content: {text/event-stream: {schema: {type: string}}}}
                "401": {$ref: "#/components/responses/Problem"}
          /v1/batches/{id}/export:
            parameters: [{$ref: "#/components/parameters/id"}]
            get:
              summary: Every item, streamed; gzip with Accept-Encoding gzip
              parameters:
                - {name: format, in: query, schema: {type: string, enum: [ndjson, csv, json]}}
                - {name: status, in: query, schema: {$ref: "#/components/schemas/ItemStatus"}}
              responses:
                "200":
                  description: The export
                  content:
                    application/x-ndjson: {schema: {type: string}}
                    text/csv: {schema: {type: string}}
                    application/json: {schema: {type: array, items: {$ref: "#/components/schemas/Item"}}}
                "400": {$ref: "#/components/responses/Problem"}
                "404": {$ref: "#/components/responses/Problem"}
          /v1/webhooks:
            post:
              summary: Subscribe a URL to events (delivered as signed POSTs, retried with backoff)
              requestBody:
                required: true
                content:
                  application/json:
                    schema:
                      type: object
                      required: [url]
                      properties:
                        url: {type: string}
                        events: {type: array, items: {type: string}}
                        secret: {type: string}
              responses:
                "201": {description: "The webhook, with its secret (shown once)", content: {application/json: {schema: {$ref: "#/components/schemas/Webhook"}}}}
                "422": {$ref: "#/components/responses/Problem"}
            get:
              summary: The tenant's webhooks (without secrets)
              responses:
                "200":
                  description: Webhooks
                  content:
                    application/json:
                      schema:
                        type: object
                        properties:
                          webhooks: {type: array, items: {$ref: "#/components/schemas/Webhook"}}
          /v1/webhooks/{hook}:
            parameters: [{name: hook, in: path, required: true, schema: {type: string}}]
            delete:
              summary: Remove a webhook
              responses:
                "204": {description: Deleted}
                "404": {$ref: "#/components/responses/Problem"}
          /v1/webhooks/{hook}/deliveries:
            parameters: [{name: hook, in: path, required: true, schema: {type: string}}]
            get:
              summary: The delivery log, newest first
              responses:
                "200":
                  description: Deliveries
                  content:
                    application/json:
                      schema:
                        type: object
                        properties:
                          deliveries:
                            type: array
                            items:
                              type: object
                              properties:
                                id: {type: integer}
                                event_id: {type: integer}
                                status: {type: string, enum: [pending, delivered, failed]}
                                attempts: {type: integer}
                                last_status_code: {type: [integer, "null"]}
                                last_error: {type: [string, "null"]}
                                next_attempt_at: {type: [string, "null"]}
                                delivered_at: {type: [string, "null"]}
                "404": {$ref: "#/components/responses/Problem"}
          /metrics:
            get:
              summary: Prometheus metrics
              security: []
              responses:
                "200": {description: Prometheus text format, content: {text/plain: {schema: {type: string}}}}
        components:
          securitySchemes:
            bearer: {type: http, scheme: bearer}
          parameters:
            id: {name: id, in: path, required: true, schema: {type: string}}
          pathItems:
            Action:
              parameters: [{$ref: "#/components/parameters/id"}]
              post:
                summary: A lifecycle action (seal, confirm, pause, resume, cancel)
                responses:
                  "200": {description: The batch, content: {application/json: {schema: {$ref: "#/components/schemas/Batch"}}}}
                  "404": {$ref: "#/components/responses/Problem"}
                  "409": {$ref: "#/components/responses/Problem"}
          responses:
            Problem:
              description: An error
              content:
                application/problem+json: {schema: {$ref: "#/components/schemas/Problem"}}
          schemas:
            Health:
              type: object
              required: [status]
              properties: {status: {type: string}}
            Problem:
              type: object
              required: [type, title, status, detail]
              properties:
                type: {type: string}
                title: {type: string}
                status: {type: integer}
                detail: {type: string}
            BatchStatus:
              type: string
              enum: [created, pre_processed, confirmed, processing, paused, completed, failed, canceled]
            ItemStatus:
              type: string
              enum: [pending, running, succeeded, failed, skipped, dead, canceled]
            Options:
              type: object
              additionalProperties: false
              properties:
                chunk_size: {type: integer, minimum: 1, maximum: 100000}
                concurrency: {type: integer, minimum: 1, maximum: 10000}
                max_attempts: {type: integer, minimum: 1, maximum: 1000}
                backoff:
                  type: object
                  properties: {base: {type: number}, cap: {type: number}}
                item_timeout: {type: number}
                batch_timeout: {type: number}
                rate_limit:
                  type: [object, "null"]
                  properties: {rate: {type: number}, max_concurrent: {type: integer}}
                ttl: {type: number}
                require_confirmation: {type: boolean}
                failure_policy: {type: string, enum: [continue, stop_on_first_error, stop_above_ratio]}
                failure_ratio: {type: number}
                failure_min_items: {type: integer}
                idempotency_key: {type: [string, "null"]}
            CreateBatch:
              type: object
              additionalProperties: false
              required: [type]
              properties:
                type: {type: string}
                context: {type: object}
                items: {type: array}
                options: {$ref: "#/components/schemas/Options"}
                mode: {type: string, enum: [auto, sync, async]}
                dry_run: {type: boolean}
                priority: {type: integer}
                require_confirmation: {type: boolean}
            Counts:
              type: object
              required: [total, pending, running, processed, succeeded, failed, skipped, dead, canceled, retried, rescued]
              properties:
                total: {type: integer}
                pending: {type: integer}
                running: {type: integer}
                processed: {type: integer}
                succeeded: {type: integer}
                failed: {type: integer}
                skipped: {type: integer}
                dead: {type: integer}
                canceled: {type: integer}
                retried: {type: integer}
                rescued: {type: integer}
            Batch:
              type: object
              required: [id, type, status, dry_run, priority, context, options, counts, progress, rate, eta_seconds, created_at, confirmed_at, started_at, completed_at, expires_at, errors]
              properties:
                id: {type: string}
                type: {type: string}
                status: {$ref: "#/components/schemas/BatchStatus"}
                dry_run: {type: boolean}
                priority: {type: integer}
                sealed: {type: boolean}
                context: {}
                options: {$ref: "#/components/schemas/Options"}
                counts: {$ref: "#/components/schemas/Counts"}
                progress: {type: number, minimum: 0, maximum: 100}
                rate: {type: number}
                eta_seconds: {type: [number, "null"]}
                created_at: {type: string, format: date-time}
                confirmed_at: {type: [string, "null"], format: date-time}
                started_at: {type: [string, "null"], format: date-time}
                completed_at: {type: [string, "null"], format: date-time}
                expires_at: {type: [string, "null"], format: date-time}
                failure_reason: {type: [string, "null"]}
                result: {}
                errors:
                  type: array
                  items:
                    type: object
                    required: [seq, code, message]
                    properties: {seq: {type: integer}, code: {type: string}, message: {type: string}}
                retried_items: {type: integer}
            SyncResult:
              allOf:
                - {$ref: "#/components/schemas/Batch"}
                - type: object
                  properties:
                    queued: {const: false}
                    items: {type: array, items: {$ref: "#/components/schemas/Item"}}
                    error_groups: {type: array, items: {$ref: "#/components/schemas/ErrorGroup"}}
            Accepted:
              type: object
              required: [queued, id, status, status_url, total]
              properties:
                queued: {const: true}
                id: {type: string}
                status: {$ref: "#/components/schemas/BatchStatus"}
                status_url: {type: string}
                total: {type: integer}
                sealed: {type: boolean}
            AppendResult:
              type: object
              required: [inserted, rejected, total, errors, status]
              properties:
                inserted: {type: integer}
                rejected: {type: integer}
                total: {type: integer}
                status: {$ref: "#/components/schemas/BatchStatus"}
                errors:
                  type: array
                  items:
                    type: object
                    properties: {line: {type: integer}, message: {type: string}}
            ItemError:
              type: object
              required: [code, message, category]
              properties:
                code: {type: string}
                message: {type: string}
                category: {type: string, enum: [retryable, permanent, fatal]}
            Item:
              type: object
              required: [seq, status, attempts, output, error]
              properties:
                seq: {type: integer}
                status: {$ref: "#/components/schemas/ItemStatus"}
                attempts: {type: integer}
                output: {}
                error:
                  oneOf:
                    - {type: "null"}
                    - {$ref: "#/components/schemas/ItemError"}
                item: {}
                updated_at: {type: [string, "null"]}
                next_attempt_at: {type: [string, "null"]}
            ErrorGroup:
              type: object
              required: [code, category, count, samples]
              properties:
                code: {type: string}
                category: {type: string}
                count: {type: integer}
                samples:
                  type: array
                  items:
                    type: object
                    required: [seq, message]
                    properties: {seq: {type: integer}, message: {type: string}}
            Webhook:
              type: object
              required: [id, url, events, created_at]
              properties:
                id: {type: string}
                url: {type: string}
                events: {type: array, items: {type: string}}
                secret: {type: string}
                created_at: {type: string}
            Event:
              type: object
              required: [id, batch_id, type, at, data]
              properties:
                id: {type: integer}
                batch_id: {type: string}
                type: {type: string}
                at: {type: string, format: date-time}
                data: {type: object}

        """#
}
