import HTTPTypes
import Hummingbird

/// Answers 405 with `Allow` (RFC 9110 §15.5.6) for a known path asked with a
/// method it does not have (`TRACE /v1/nodes`, `PUT /v1/batches/{id}`),
/// where the router alone would answer 404 as for a path that does not exist.
/// Built from the router's own routes once they are all added, so the list
/// cannot drift from what the server serves.
struct MethodNotAllowedMiddleware<Context: RequestContext>: RouterMiddleware {
    let routes: [(path: RouterPath, method: HTTPRequest.Method)]

    init(routes: [Router<Context>.RouteDescription]) {
        self.routes = routes.map { ($0.path, $0.method) }
    }

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws
        -> Response
    {
        do {
            return try await next(request, context)
        } catch let error as HTTPError where error.status == .notFound {
            let allowed = methods(for: request.uri.path)
            guard !allowed.isEmpty, !allowed.contains(request.method) else { throw error }
            let names = allowed.map(\.rawValue).sorted()
            var response = try Problem(
                .methodNotAllowed,
                "\(request.method.rawValue) is not allowed here; use \(names.joined(separator: ", "))"
            ).response(from: request, context: context)
            response.headers[.allow] = names.joined(separator: ", ")
            return response
        }
    }

    /// The methods of the routes whose path matches `path`.
    func methods(for path: String) -> Set<HTTPRequest.Method> {
        let segments = path.split(separator: "/", omittingEmptySubsequences: true)
        var methods: Set<HTTPRequest.Method> = []
        for route in routes where route.path.components.count == segments.count {
            if zip(route.path.components, segments).allSatisfy({ element, segment in element ~= segment }) {
                methods.insert(route.method)
            }
        }
        return methods
    }
}
