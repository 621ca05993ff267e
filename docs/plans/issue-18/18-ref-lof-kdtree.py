import numpy as np, math, warnings
warnings.simplefilter("ignore")
from sklearn.neighbors import LocalOutlierFactor
def pw(a):
    n=len(a)
    if n<8:
        r=0.0
        for x in a: r+=x
        return r
    r=list(a[:8]); i=8
    while i < n-(n%8):
        for j in range(8): r[j]+=a[i+j]
        i+=8
    res=((r[0]+r[1])+(r[2]+r[3]))+((r[4]+r[5])+(r[6]+r[7]))
    while i<n: res+=a[i]; i+=1
    return res
def heap_push(vals, idxs, val, vi):
    size=len(vals)
    if val >= vals[0]: return
    vals[0]=val; idxs[0]=vi; cur=0
    while True:
        l=2*cur+1; r=l+1
        if l>=size: break
        elif r>=size:
            if vals[l]>val: sw=l
            else: break
        elif vals[l]>=vals[r]:
            if val<vals[l]: sw=l
            else: break
        else:
            if val<vals[r]: sw=r
            else: break
        vals[cur]=vals[sw]; idxs[cur]=idxs[sw]; cur=sw
    vals[cur]=val; idxs[cur]=vi
def swap(v,ix,i,j): v[i],v[j]=v[j],v[i]; ix[i],ix[j]=ix[j],ix[i]
def introsort(v,ix,lo,n,maxd):
    while n>15:
        if maxd<=0: raise Exception("heapsort path")
        maxd-=1
        # median3 in place on v[lo:lo+n]
        p=lo+n//2; e=lo+n-1
        if v[lo]>v[e]: swap(v,ix,lo,e)
        if v[e]>v[p]:
            swap(v,ix,e,p)
            if v[lo]>v[e]: swap(v,ix,lo,e)
        pivot=v[e]
        i=1; j=n-2
        while True:
            while i<=j and v[lo+i]<pivot: i+=1
            while i<=j and v[lo+j]>pivot: j-=1
            if i>=j: break
            swap(v,ix,lo+i,lo+j); i+=1; j-=1
        pi=i; swap(v,ix,lo+pi,lo+n-1)
        introsort(v,ix,lo,pi,maxd)
        lo+=pi+1; n-=pi+1
    for i in range(1,n):
        tv=v[lo+i]; ti=ix[lo+i]; j=i
        while j>0 and v[lo+j-1]>tv:
            v[lo+j]=v[lo+j-1]; ix[lo+j]=ix[lo+j-1]; j-=1
        v[lo+j]=tv; ix[lo+j]=ti
def kquery(tree, pt, k):
    data, idx_array, node_data, node_bounds = tree.get_arrays()
    d=data.shape[1]
    vals=[math.inf]*k; idxs=[0]*k
    def min_rdist(i):
        r=0.0
        for j in range(d):
            lo=node_bounds[0,i,j]-pt[j]; hi=pt[j]-node_bounds[1,i,j]
            dd=(lo+abs(lo))+(hi+abs(hi))
            r+=math.pow(0.5*dd,2.0)
        return r
    def rdist(x):
        s=0.0
        for j in range(d):
            t=pt[j]-x[j]; s+=t*t
        return s
    def rec(i, lb):
        nd=node_data[i]
        if lb > vals[0]: return
        if nd['is_leaf']:
            for q in range(nd['idx_start'], nd['idx_end']):
                heap_push(vals, idxs, rdist(data[idx_array[q]]), idx_array[q])
        else:
            i1=2*i+1; i2=i1+1; a=min_rdist(i1); b=min_rdist(i2)
            if a<=b: rec(i1,a); rec(i2,b)
            else: rec(i2,b); rec(i1,a)
    rec(0, min_rdist(0))
    maxd=2*int(math.log2(k))
    introsort(vals,idxs,0,k,maxd)
    return [math.sqrt(v) for v in vals], idxs
rng=np.random.default_rng(7)
for d,rnd in ((1,1),(1,3),(3,1),(3,6)):
    X=np.round(rng.standard_normal((1000,d)),rnd)
    lof=LocalOutlierFactor(n_neighbors=20,novelty=True).fit(X)
    T=np.vstack([X[:200], np.round(rng.standard_normal((300,d))*1.5,rnd)])
    dec=lof.decision_function(T); pred=lof.predict(T)
    k=lof.n_neighbors_
    mine=[]
    for x in T:
        dist,idx=kquery(lof._tree, x, k)
        dk=lof._distances_fit_X_[idx,k-1]
        reach=[max(a,b) for a,b in zip(dist,dk)]
        lrd=1.0/(pw(reach)/k+1e-10)
        ratios=[lof._lrd[i]/lrd for i in idx]
        mine.append(-(pw(ratios)/k)-lof.offset_)
    mine=np.array(mine)
    print(d,rnd,"dec mismatches",np.count_nonzero(mine!=dec),"label mismatches",np.count_nonzero(np.where(mine<0,-1,1)!=pred),"maxdiff",np.max(np.abs(mine-dec)))
